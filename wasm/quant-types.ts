/** ggml type ids of the weight formats the quantised matmul handles (wasm/quant.ts). */

export const F16: i32 = 1;
export const Q4_0: i32 = 2;
export const Q4_1: i32 = 3;
export const Q8_0: i32 = 8;
export const Q4_K: i32 = 12;
export const Q5_K: i32 = 13;
export const Q6_K: i32 = 14;
/** Q6_K blocks in lane order (wasm/quant-lanes.ts; not a ggml id): the relaxed build only. */
export const Q6_K_LANES: i32 = 1014;
