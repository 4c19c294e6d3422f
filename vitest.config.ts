import { existsSync } from "node:fs";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Reference checkpoints reach the workerd tests as data bindings (workerd has no file system).
const REF = "../shared/models";
const haveRef = existsSync(`${REF}/reference/greedy.json`);
const refBindings = haveRef
  ? {
      dataBlobBindings: {
        REF_STORIES: `${REF}/stories260K-f32.gguf`,
        REF_MIXTRAL: `${REF}/tiny-mixtral-f32.gguf`,
        REF_QWEN3MOE: `${REF}/tiny-qwen3moe-f32.gguf`,
      },
      textBlobBindings: { REF_GREEDY: `${REF}/reference/greedy.json` },
    }
  : {};

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          environment: "node",
          include: ["test/unit/**/*.test.ts"],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: "e2e",
          environment: "node",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              cf: false,
              bindings: {
                API_KEYS: "test:sk-test,other:sk-other",
                ADMIN_API_KEYS: "sk-admin",
                LOG_LEVEL: "warn",
              },
              ...refBindings,
            },
          }),
        ],
        test: { name: "workerd", include: ["test/integration/**/*.test.ts"], testTimeout: 60_000 },
      },
      {
        // the same worker with a small NPU budget, so a generated MoE model exceeds one NPU
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              cf: false,
              bindings: {
                API_KEYS: "test:sk-test",
                ADMIN_API_KEYS: "sk-admin",
                LOG_LEVEL: "warn",
                NPU_MEMORY_BUDGET_MB: "24",
              },
            },
          }),
        ],
        test: {
          name: "workerd-budget",
          include: ["test/budget/**/*.test.ts"],
          testTimeout: 120_000,
        },
      },
    ],
  },
});
