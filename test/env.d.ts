import type { Env as AppEnv } from "../workers/env.ts";

declare global {
  namespace Cloudflare {
    interface Env extends AppEnv {
      REF_STORIES?: ArrayBuffer;
      REF_MIXTRAL?: ArrayBuffer;
      REF_QWEN3MOE?: ArrayBuffer;
      REF_GREEDY?: string;
      QUANT_Q4_K_M?: ArrayBuffer;
      QUANT_LLAMA_CPP?: string;
    }
    interface GlobalProps {
      mainModule: typeof import("../workers/index.ts");
      durableNamespaces: "Npu" | "Expert" | "JobExecutor" | "ClusterManager";
    }
  }
}
