import { existsSync } from "node:fs";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Reference checkpoints reach the workerd tests as data bindings (workerd has no file system).
const REF = "../shared/models";
const haveRef = existsSync(`${REF}/reference/greedy.json`);
const refData = haveRef
  ? {
      REF_STORIES: `${REF}/stories260K-f32.gguf`,
      REF_MIXTRAL: `${REF}/tiny-mixtral-f32.gguf`,
      REF_QWEN3MOE: `${REF}/tiny-qwen3moe-f32.gguf`,
    }
  : {};
const refText = haveRef ? { REF_GREEDY: `${REF}/reference/greedy.json` } : {};
// The quantised-weights fixtures live in the repo: always bound.
const QUANT = "test/fixtures/quant";
const refBindings = {
  dataBlobBindings: { ...refData, QUANT_Q4_K_M: `${QUANT}/Q4_K_M.gguf` },
  textBlobBindings: { ...refText, QUANT_LLAMA_CPP: `${QUANT}/llama-cpp.json` },
};

// Tests whose wasm results depend on the build: they run in "unit" and again in "unit-relaxed".
const RELAXED_TESTS = [
  "test/unit/kernels*.test.ts",
  "test/unit/model/quant-*.test.ts",
  "test/unit/model/big-moe-llama-cpp.test.ts",
  "test/unit/engine/determinism.test.ts",
  "test/unit/engine/reference.test.ts",
];

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
        // the kernel contract and the reference tests again, on wasm/kernels-relaxed.wasm (Node 20
        // compiles relaxed SIMD only with this V8 flag; hosts/node-kernels.ts picks the build)
        test: {
          name: "unit-relaxed",
          environment: "node",
          include: RELAXED_TESTS,
          execArgv: ["--experimental-wasm-relaxed-simd"],
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
                API_KEYS: "test:sk-test,other:sk-other,rate:sk-rate,conc:sk-conc",
                // tenant-limits.test.ts: two tenants with lowered limits; the rest keep the default
                TENANT_LIMITS: "*=60000/256, rate=2/64, conc=600/1",
                ADMIN_API_KEYS: "sk-admin",
                LOG_LEVEL: "warn",
                FAULT_INJECTION: "true",
                // a lowered slice: every long generation in this suite crosses invocations
                NPU_SLICE_MS: "20",
                // the placement tests' prompts are tens of tokens: index every 16-token block
                PREFIX_INDEX_TOKENS: "16",
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
