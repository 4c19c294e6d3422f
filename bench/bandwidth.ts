/**
 * Single-thread memory read bandwidth, the roofline for decode (which streams every weight once
 * per step). A hand-assembled wasm SIMD loop sums a 256 MiB buffer (far past the last-level
 * cache) as four sequential streams, one per quarter (two f32x4 accumulators each, 128 bytes per
 * iteration): the hardware prefetcher follows one stream per 4 KiB page, and four streams in
 * separate pages read faster than one (the F32 matvec reads its rows the same way,
 * wasm/kernels.ts). Median of several passes after one warm-up; bytes read / seconds. No C
 * compiler and no dependency: the module is built from its bytes below and its sum is checked
 * against a JS sum, so a broken encoding cannot time nothing.
 */

const uleb = (n: number): number[] => {
  const out: number[] = [];
  let v = n >>> 0;
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];

const SIMD = 0xfd;
const LOCAL_GET = 0x20;
const LOCAL_SET = 0x21;
const LOCAL_TEE = 0x22;
const F32X4_ADD = [SIMD, 0xe4, 0x01];
const STREAMS = 4;
const ACCUMULATORS = 2 * STREAMS;
const STREAM_STEP = 32;

/**
 * `sum(p, end): f32`: lane 0 of the f32x4 sum of the four streams [p + s q, end + s q), s < 4,
 * q = `quarter` bytes; end - p a multiple of 32.
 */
function sumModule(pages: number, quarter: number): Uint8Array<ArrayBuffer> {
  const acc = (i: number) => 2 + i; // locals after the two i32 params
  const loop: number[] = [];
  for (let i = 0; i < ACCUMULATORS; i++) {
    // acc_i += v128.load offset=(stream * quarter + 16 (i & 1)) (p)
    const offset = (i >> 1) * quarter + 16 * (i & 1);
    loop.push(LOCAL_GET, acc(i), LOCAL_GET, 0, SIMD, 0x00, 4, ...uleb(offset));
    loop.push(...F32X4_ADD, LOCAL_SET, acc(i));
  }
  // p += STREAM_STEP; br_if (p < end)
  loop.push(LOCAL_GET, 0, 0x41, ...sleb(STREAM_STEP), 0x6a, LOCAL_TEE, 0);
  loop.push(LOCAL_GET, 1, 0x49, 0x0d, 0);
  const total: number[] = [LOCAL_GET, acc(0)];
  for (let i = 1; i < ACCUMULATORS; i++) total.push(LOCAL_GET, acc(i), ...F32X4_ADD);
  total.push(SIMD, 0x1f, 0); // f32x4.extract_lane 0
  const body = [...vec([[ACCUMULATORS, 0x7b]]), 0x03, 0x40, ...loop, 0x0b, ...total, 0x0b];
  const name = (s: string) => [...uleb(s.length), ...new TextEncoder().encode(s)];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, vec([[0x60, 2, 0x7f, 0x7f, 1, 0x7d]])), // (i32, i32) -> f32
    ...section(3, vec([[0]])),
    ...section(5, vec([[0, ...uleb(pages)]])),
    ...section(
      7,
      vec([
        [...name("mem"), 2, 0],
        [...name("sum"), 0, 0],
      ]),
    ),
    ...section(10, vec([[...uleb(body.length), ...body]])),
  ]);
}

/** Signed LEB128 for i32.const. */
function sleb(n: number): number[] {
  const out: number[] = [];
  let v = n | 0;
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export interface Bandwidth {
  gbps: number;
  method: string;
}

export async function measureReadBandwidth(mib = 256, passes = 7): Promise<Bandwidth> {
  const bytes = mib * 2 ** 20;
  const quarter = bytes / STREAMS;
  const instance = await WebAssembly.instantiate(
    await WebAssembly.compile(sumModule(bytes / 65536, quarter)),
  );
  const mem = instance.exports.mem as WebAssembly.Memory;
  const sum = instance.exports.sum as (p: number, end: number) => number;
  const f = new Float32Array(mem.buffer);
  for (let i = 0; i < f.length; i++) f[i] = (i % 7) * 0.25;
  let expected = 0;
  for (let i = 0; i < f.length; i += 4) expected += f[i] as number;
  const got = sum(0, quarter); // warm-up, and the check that the loop reads what it should
  if (Math.abs(got - expected) > 1e-3 * expected)
    throw new Error(`bandwidth kernel summed ${got}, expected about ${expected}`);
  const gbps: number[] = [];
  for (let r = 0; r < passes; r++) {
    const t0 = performance.now();
    sum(0, quarter);
    gbps.push(bytes / ((performance.now() - t0) / 1000) / 1e9);
  }
  gbps.sort((a, b) => a - b);
  return {
    gbps: +(gbps[Math.floor(passes / 2)] as number).toFixed(1),
    method: `wasm SIMD read of ${mib} MiB as four sequential streams, one thread, median of ${passes} passes`,
  };
}
