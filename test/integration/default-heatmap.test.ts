/**
 * The default PD heatmap through the API: a model nobody profiled, with a PD deployment beside
 * its default colocated one, is placed by the heatmap the JobExecutor derives from its GGUF
 * header (`groupReason` "default-heatmap"); once a measured profile is stored
 * (`PUT /api/models/:name/pd-profile`) that one decides ("heatmap"), even against the default.
 */
import { describe, expect, it } from "vitest";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const MODEL = "heat-lemma";

interface Decision {
  requestId: string;
  deploymentId: string;
  groupReason: string | null;
}

async function placed(): Promise<Decision> {
  const res = await post("/v1/completions", { model: MODEL, prompt: "Hi", max_tokens: 4 });
  expect(res.status).toBe(200);
  await res.json();
  const id = res.headers.get("x-request-id");
  const list = (await (await admin("/api/scheduler/decisions?limit=50")).json()) as {
    data: Decision[];
  };
  const d = list.data.find((x) => x.requestId === id);
  if (!d) throw new Error(`no decision for ${id}`);
  return d;
}

describe("default PD heatmap", () => {
  it("places by the derived heatmap until a measured profile is stored", async () => {
    const up = await admin(`/api/models/${MODEL}`, { method: "PUT", body: DEFAULT_MODEL });
    expect(up.status).toBe(201);
    expect((await admin(`/api/models/${MODEL}/pd-profile`)).status).toBe(404);
    const coloc = await placed();
    expect(coloc.groupReason).toBe("only-group"); // one deployment: nothing to choose
    const pd = await postDeployment({
      model: MODEL,
      mode: "pd",
      instances: { prefill: 1, decode: 1 },
    });
    expect(pd.status).toBe(201);
    const pdId = ((await pd.json()) as { id: string }).id;

    // a 1-token prompt with 4 tokens out: the lemma model's derived heatmap has colocated faster
    const byDefault = await placed();
    expect(byDefault).toMatchObject({
      groupReason: "default-heatmap",
      deploymentId: coloc.deploymentId,
    });

    // a measured profile that has PD ten times faster everywhere wins over the default one
    const measured = {
      model: MODEL,
      measuredAt: Date.now(),
      inputBuckets: [64, 512],
      outputBuckets: [32, 128],
      colocatedMs: [
        [100, 200],
        [300, 400],
      ],
      pdMs: [
        [10, 20],
        [30, 40],
      ],
    };
    const put = await call(
      `/api/models/${MODEL}/pd-profile`,
      { method: "PUT", body: JSON.stringify(measured) },
      "sk-admin",
    );
    expect(put.status).toBe(200);
    expect(await placed()).toMatchObject({ groupReason: "heatmap", deploymentId: pdId });
  });
});
