import type { GenerateSampling } from "../../shared/protocol/messages.ts";

/** Greedy sampling with a fixed seed, no stop strings and no logprobs: tasks built by hand. */
export const GREEDY_SAMPLING: GenerateSampling = {
  temperature: 0,
  topP: 1,
  topK: 0,
  seed: 1,
  stop: [],
  ignoreEos: false,
  logprobs: false,
  topLogprobs: 0,
};
