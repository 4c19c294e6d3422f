/**
 * ggml block formats that weight matrices keep in kernel memory, as GGUF stores them: sizes,
 * dequantisation (for embedding rows and for readers that want f32), and the per-row layout of
 * the quantised activations that the quantised matmul pairs with each weight type. Pure.
 *
 * Weight blocks (bytes, little-endian; "f16" is an IEEE half):
 *   F16   1 value, 2 bytes.
 *   Q8_0  32 values, 34 bytes: f16 d, int8 q[32]; x = d * q.
 *   Q4_0  32 values, 18 bytes: f16 d, u8 qs[16]; value j < 16 is the low nibble of qs[j], value
 *         16 + j the high nibble; x = d * (nibble - 8).
 *   Q4_1  32 values, 20 bytes: f16 d, f16 m, u8 qs[16] as Q4_0; x = d * nibble + m.
 *   Q4_K  256 values, 144 bytes: f16 d, f16 dmin, u8 scales[12] (eight 6-bit scale/min pairs),
 *         u8 qs[128]; sub-block s of 32 values: x = d * sc[s] * q - dmin * mn[s]. Each 64 values
 *         share 32 bytes of qs: the first 32 take the low nibbles, the next 32 the high nibbles.
 *   Q5_K  256 values, 176 bytes: f16 d, f16 dmin, u8 scales[12] as Q4_K, u8 qh[32], u8 qs[128]:
 *         Q4_K's nibbles plus a fifth bit: value i's bit is bit 2 (i / 64) + (i / 32) % 2 of
 *         qh[i % 32]; x = d * sc[s] * q - dmin * mn[s] with q in 0..31.
 *   Q6_K  256 values, 210 bytes: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8
 *         scales[16] (one per 16 values), f16 d; x = d * scales[s] * (q - 32).
 *
 * One resident form that is not a GGUF type: Q6_K_LANES, Q6_K's blocks with their 256 quants in
 * lane order (q6kLanePosition), which the relaxed-SIMD wasm build keeps Q6_K matrices in (its
 * kernels' `residentType`; their `toResident` packs a matrix at load). The same 210 bytes a block:
 * u8 v[192] then Q6_K's scales[16] and d. Lane position L = 64 p + 16 k + i (p, k < 4, i < 16)
 * holds value 16 (i >> 1) + 128 (k >> 1) + 4 p + 2 (k & 1) + (i & 1), so each pair of lanes holds
 * two values of one sub-block; for k < 3 its quant is the low six bits of v[48 p + 16 k + i], for
 * k = 3 bits 2j, 2j + 1 of it are the top two bits of v[48 p + 16 j + i] (j < 3). Why this suits
 * 128-bit SIMD: wasm/quant-lanes.ts.
 *
 * Activation rows (written by the matmul into its scratch, one row after another):
 *   for F16 weights: the row rounded to f16, each value kept as the f32 of that half (4 bytes);
 *   for Q8_0 and Q4_0 ("Q8_0 activations"): per 32 values f32 d (a value of f16: rounded through
 *     half as ggml stores it) then int8 q[32]: d = amax / 127, q = round-half-even(x * (127 /
 *     amax)), as llama.cpp's x86 quantize_row_q8_0 (36 bytes);
 *   for Q4_1 ("Q8_1 activations"): per 32 values f32 d as for Q8_0, f32 s (the f16 rounding of
 *     d before its own rounding times the sum of q, as llama.cpp's quantize_row_q8_1), int8 q[32]
 *     (40 bytes);
 *   for Q4_K, Q5_K and Q6_K ("Q8_K activations"): per 256 values f32 d, int8 q[256], int16 bsums[16]
 *     (sums of 16 q): iscale = -127 / max (max: the value of largest magnitude, first one),
 *     q = min(127, round-half-even(iscale * x)), d = 1 / iscale, as quantize_row_q8_K_ref (292 bytes).
 */
import {
  f16ToF32,
  GGML_BLOCKS,
  GgmlType,
  GgufError,
  type GgufFile,
  ggmlTypeName,
  tensorByteSize,
} from "../gguf/gguf.ts";

/** Q6_K in lane order (see the header): a resident form, not a GGUF type id. */
export const Q6_K_LANES = 1014;

/** ggml types a weight matrix keeps in kernel memory (BF16 is widened to F32 at load). */
export type GgufWeightType =
  | typeof GgmlType.F32
  | typeof GgmlType.F16
  | typeof GgmlType.Q8_0
  | typeof GgmlType.Q4_0
  | typeof GgmlType.Q4_1
  | typeof GgmlType.Q4_K
  | typeof GgmlType.Q5_K
  | typeof GgmlType.Q6_K;

/** The types a weight matrix can have in kernel memory: a GGUF type or Q6_K_LANES. */
export type WeightType = GgufWeightType | typeof Q6_K_LANES;

const WEIGHT_TYPES: ReadonlySet<number> = new Set<GgufWeightType>([
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
]);

/** True for the GGUF types a weight tensor may have (see GgufWeightType). */
export function isWeightType(type: number): type is GgufWeightType {
  return WEIGHT_TYPES.has(type);
}

/** True for every type a matrix can have in kernel memory (GGUF's and Q6_K_LANES). */
export function isResidentType(type: number): type is WeightType {
  return type === Q6_K_LANES || WEIGHT_TYPES.has(type);
}

/** The GGUF type whose block sizes a weight type has. */
function blockType(type: WeightType): GgufWeightType {
  return type === Q6_K_LANES ? GgmlType.Q6_K : type;
}

/** Values per block of a weight type. */
export function blockValues(type: WeightType): number {
  return GGML_BLOCKS[blockType(type)][0];
}

/** Bytes of one row of `n` values. @throws GgufError when n is not a whole number of blocks. */
export function rowBytes(type: WeightType, n: number): number {
  const [qk, bytes] = GGML_BLOCKS[blockType(type)];
  if (n % qk !== 0) {
    throw new GgufError(`${ggmlTypeName(type)} rows must be a multiple of ${qk} long, got ${n}`);
  }
  return (n / qk) * bytes;
}

/** Bytes of one quantised activation row of `n` values paired with weights of `type`. */
export function actRowBytes(type: WeightType, n: number): number {
  switch (type) {
    case GgmlType.F32:
      return 0;
    case GgmlType.F16:
      return 4 * n;
    case GgmlType.Q8_0:
    case GgmlType.Q4_0:
      return (n / 32) * 36;
    case GgmlType.Q4_1:
      return (n / 32) * 40;
    default:
      return (n / 256) * 292;
  }
}

/** Most bytes any weight type's activation row of `n` values takes (F16's 4n). */
export function maxActRowBytes(n: number): number {
  return 4 * n;
}

/** F16_TO_F32[h] = the value of half h (exact). */
export const F16_TO_F32 = new Float32Array(65536);
for (let h = 0; h < 65536; h++) F16_TO_F32[h] = f16ToF32(h);

function u16(b: Uint8Array, p: number): number {
  return (b[p] as number) | ((b[p + 1] as number) << 8);
}

/** Q4_K's 6-bit scale of sub-block j (0..7), from the 12 scale bytes at `p`. */
export function q4kScale(b: Uint8Array, p: number, j: number): number {
  if (j < 4) return (b[p + j] as number) & 63;
  return ((b[p + j + 4] as number) & 0xf) | (((b[p + j - 4] as number) >> 6) << 4);
}

/** Q4_K's 6-bit min of sub-block j (0..7), from the 12 scale bytes at `p`. */
export function q4kMin(b: Uint8Array, p: number, j: number): number {
  if (j < 4) return (b[p + j + 4] as number) & 63;
  return ((b[p + j + 4] as number) >> 4) | (((b[p + j] as number) >> 6) << 4);
}

/** Q6_K value i (0..255, before subtracting 32) of the block at `p`. */
export function q6kValue(b: Uint8Array, p: number, i: number): number {
  const half = i >> 7; // 128 values per half: ql 64 bytes, qh 32 bytes
  const r = i & 127;
  const quarter = r >> 5; // 0..3
  const l = r & 31;
  const ql = b[p + half * 64 + l + (quarter & 1) * 32] as number;
  const lo = quarter < 2 ? ql & 0xf : ql >> 4;
  const hi = ((b[p + 128 + half * 32 + l] as number) >> (2 * quarter)) & 3;
  return lo | (hi << 4);
}

/** Lane position (0..255) of value v of a Q6_K_LANES block (the header's map, inverted). */
export function q6kLanePosition(v: number): number {
  const i = 2 * ((v >> 4) & 7) + (v & 1);
  const k = 2 * (v >> 7) + ((v >> 1) & 1);
  return 64 * ((v >> 2) & 3) + 16 * k + i;
}

/** Q6_K_LANES value v (0..255, before subtracting 32) of the block at `p`. */
export function q6kLanesValue(b: Uint8Array, p: number, v: number): number {
  const l = q6kLanePosition(v);
  const at = p + 48 * (l >> 6) + (l & 15);
  const k = (l >> 4) & 3;
  if (k < 3) return (b[at + 16 * k] as number) & 63;
  return (
    ((b[at] as number) >> 6) |
    (((b[at + 16] as number) >> 6) << 2) |
    (((b[at + 32] as number) >> 6) << 4)
  );
}

/** Q4_K value i (0..15) of the block at `p`. */
export function q4kValue(b: Uint8Array, p: number, i: number): number {
  const q = b[p + 16 + (i >> 6) * 32 + (i & 31)] as number;
  return i & 32 ? q >> 4 : q & 0xf;
}

/** Q5_K value i (0..31) of the block at `p`. */
export function q5kValue(b: Uint8Array, p: number, i: number): number {
  const q = b[p + 48 + (i >> 6) * 32 + (i & 31)] as number;
  const hi = ((b[p + 16 + (i & 31)] as number) >> (2 * (i >> 6) + ((i >> 5) & 1))) & 1;
  return (i & 32 ? q >> 4 : q & 0xf) | (hi << 4);
}

const fr = Math.fround;

/**
 * Dequantises `n` values of a row (a whole number of blocks) starting at byte `p` of `b` into
 * out[o..o+n), each value one rounded f32 expression as ggml's dequantize_row_*.
 */
export function dequantizeRow(
  type: WeightType,
  b: Uint8Array,
  p: number,
  n: number,
  out: Float32Array,
  o: number,
): void {
  switch (type) {
    case GgmlType.F32: {
      const v = new DataView(b.buffer, b.byteOffset + p, n * 4);
      for (let i = 0; i < n; i++) out[o + i] = v.getFloat32(i * 4, true);
      return;
    }
    case GgmlType.F16:
      for (let i = 0; i < n; i++) out[o + i] = F16_TO_F32[u16(b, p + 2 * i)] as number;
      return;
    case GgmlType.Q8_0:
      for (let k = 0; k < n / 32; k++, p += 34) {
        const d = F16_TO_F32[u16(b, p)] as number;
        for (let j = 0; j < 32; j++) out[o++] = d * ((((b[p + 2 + j] as number) << 24) >> 24) | 0);
      }
      return;
    case GgmlType.Q4_0:
      for (let k = 0; k < n / 32; k++, p += 18, o += 32) {
        const d = F16_TO_F32[u16(b, p)] as number;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 2 + j] as number;
          out[o + j] = d * ((q & 0xf) - 8);
          out[o + 16 + j] = d * ((q >> 4) - 8);
        }
      }
      return;
    case GgmlType.Q4_1:
      for (let k = 0; k < n / 32; k++, p += 20, o += 32) {
        const d = F16_TO_F32[u16(b, p)] as number;
        const m = F16_TO_F32[u16(b, p + 2)] as number;
        for (let j = 0; j < 16; j++) {
          const q = b[p + 4 + j] as number;
          out[o + j] = fr(d * (q & 0xf)) + m;
          out[o + 16 + j] = fr(d * (q >> 4)) + m;
        }
      }
      return;
    case GgmlType.Q4_K:
    case GgmlType.Q5_K: {
      const five = type === GgmlType.Q5_K;
      for (let k = 0; k < n / 256; k++, p += five ? 176 : 144, o += 256) {
        const d = F16_TO_F32[u16(b, p)] as number;
        const dmin = F16_TO_F32[u16(b, p + 2)] as number;
        for (let s = 0; s < 8; s++) {
          const d1 = fr(d * q4kScale(b, p + 4, s));
          const m1 = fr(dmin * q4kMin(b, p + 4, s));
          for (let i = s * 32; i < s * 32 + 32; i++) {
            out[o + i] = fr(d1 * (five ? q5kValue(b, p, i) : q4kValue(b, p, i))) - m1;
          }
        }
      }
      return;
    }
    case GgmlType.Q6_K:
    case Q6_K_LANES: {
      const value = type === Q6_K_LANES ? q6kLanesValue : q6kValue;
      for (let k = 0; k < n / 256; k++, p += 210, o += 256) {
        const d = F16_TO_F32[u16(b, p + 208)] as number;
        for (let i = 0; i < 256; i++) {
          const sc = ((b[p + 192 + (i >> 4)] as number) << 24) >> 24;
          out[o + i] = fr(d * sc) * (value(b, p, i) - 32);
        }
      }
      return;
    }
  }
}

/**
 * Dequantises one tensor to f32 into `out` (allocated when omitted).
 * @throws GgufError for unknown tensors or unsupported types.
 */
export function readTensorF32(
  file: GgufFile,
  bytes: Uint8Array,
  name: string,
  out?: Float32Array,
): Float32Array {
  const t = file.tensors.get(name);
  if (!t) throw new GgufError(`tensor ${name} not found`);
  const n = t.numElements;
  const dst = out ?? new Float32Array(n);
  if (dst.length !== n) throw new GgufError(`tensor ${name}: output has ${dst.length} != ${n}`);
  dequantF32(t.type, bytes.subarray(t.offset, t.offset + t.numBytes), dst, name);
  return dst;
}

/**
 * Dequantises `dst.length` values of ggml `type` from `data` (a tensor's bytes, or a slice of
 * them starting at a block boundary) into `dst`. `what` names it in errors.
 * @throws GgufError for unsupported types or too few bytes.
 */
export function dequantF32(type: number, data: Uint8Array, dst: Float32Array, what: string): void {
  const n = dst.length;
  if (type !== GgmlType.BF16 && !isWeightType(type)) {
    throw new GgufError(`${what}: unsupported type ${ggmlTypeName(type)}`);
  }
  if (data.byteLength < tensorByteSize(type, n)) {
    throw new GgufError(`${what}: ${data.byteLength} bytes hold fewer than ${n} values`);
  }
  if (type === GgmlType.BF16) {
    const v = new DataView(data.buffer, data.byteOffset, 2 * n);
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) {
      u[0] = v.getUint16(i * 2, true) << 16;
      dst[i] = f[0] as number;
    }
  } else dequantizeRow(type, data, 0, n, dst, 0);
}
