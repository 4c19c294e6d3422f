/**
 * The quantised matmul in plain JS: the reference that wasm/kernels.ts (`matmulQ`) mirrors bit for
 * bit. Activation rows are quantised as shared/model/quant.ts describes, then each (row, weight
 * row) dot product is reduced in this fixed order:
 *
 *   F16:        eight f32 lane sums over k mod 8 of w[k] * x[k] for k < n & ~7 (both halves:
 *               the product is exact), t_l = l_l + l_(l+4), then (t0 + t1) + (t2 + t3), then
 *               the tail in order.
 *   Q8_0, Q4_0: per block of 32 in order: an exact integer sum s of q_w * q_x, then
 *               acc = acc + f32(s) * (d_w * d_x).
 *   Q4_1:       the same with q_w the nibble, then acc = acc + m_w * s_x.
 *   Q4_K, Q5_K: per block of 256: s = sum over sub-blocks of sc * (integer dot of 32), m = sum of
 *               mn * (two bsums), then acc = acc + (d_w * d_x) * f32(s), acc = acc - (dmin_w *
 *               d_x) * f32(m).
 *   Q6_K:       per block of 256: s = sum over 16 sub-blocks of scale * (integer dot of 16, q - 32),
 *               then acc = acc + (d_w * d_x) * f32(s).
 * Every float operation is one rounded f32 operation, so the result does not depend on m, on the
 * other rows, or on the backend. Integer sums stay below 2^31 for every valid block.
 */
import { InvariantError } from "../assert.ts";
import { f32ToF16, GgmlType } from "../gguf/gguf.ts";
import type { Kernels } from "./kernels.ts";
import { rangesOverlap } from "./kernels-js.ts";
import {
  actRowBytes,
  blockValues,
  F16_TO_F32,
  isResidentType,
  Q6_K_LANES,
  q4kMin,
  q4kScale,
  q6kLanesValue,
  rowBytes,
  type WeightType,
} from "./quant.ts";

const fr = Math.fround;

/** Round half to even of an f32 value (what f32.nearest and _mm256_round_ps do). */
function rne(v: number): number {
  const f = Math.floor(v);
  const diff = v - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Quantises x[xo..xo+n) into the activation layout of `type` at byte `ap` of `a`. */
export function quantizeActRow(
  type: WeightType,
  x: Float32Array,
  xo: number,
  n: number,
  a: Uint8Array,
  ap: number,
): void {
  const v = new DataView(a.buffer, a.byteOffset + ap, actRowBytes(type, n));
  if (type === GgmlType.F16) {
    for (let i = 0; i < n; i++) {
      v.setFloat32(4 * i, F16_TO_F32[f32ToF16(x[xo + i] as number)] as number, true);
    }
  } else if (type === GgmlType.Q8_0 || type === GgmlType.Q4_0 || type === GgmlType.Q4_1) {
    const q81 = type === GgmlType.Q4_1; // Q8_1: s after d, the q 4 bytes later
    const bb = q81 ? 40 : 36;
    const qo = q81 ? 8 : 4;
    for (let b = 0, p = 0; b < n / 32; b++, p += bb) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + b * 32 + j] as number));
      const d = fr(amax / 127);
      const id = amax !== 0 ? fr(127 / amax) : 0;
      v.setFloat32(p, F16_TO_F32[f32ToF16(d)] as number, true);
      let sum = 0;
      for (let j = 0; j < 32; j++) {
        const q = rne(fr((x[xo + b * 32 + j] as number) * id));
        v.setInt8(p + qo + j, q);
        sum += q;
      }
      if (q81) v.setFloat32(p + 4, F16_TO_F32[f32ToF16(fr(d * sum))] as number, true);
    }
  } else if (type !== GgmlType.F32) {
    for (let b = 0, p = 0; b < n / 256; b++, p += 292) {
      const o = xo + b * 256;
      let amax = 0;
      let max = 0;
      for (let j = 0; j < 256; j++) {
        const ax = Math.abs(x[o + j] as number);
        if (ax > amax) {
          amax = ax;
          max = x[o + j] as number;
        }
      }
      if (amax === 0) {
        for (let j = 0; j < 292; j++) v.setUint8(p + j, 0);
        continue;
      }
      const iscale = fr(-127 / max);
      for (let g = 0; g < 16; g++) {
        let sum = 0;
        for (let j = g * 16; j < g * 16 + 16; j++) {
          const q = Math.min(127, rne(fr(iscale * (x[o + j] as number))));
          v.setInt8(p + 4 + j, q);
          sum += q;
        }
        v.setInt16(p + 260 + 2 * g, sum, true);
      }
      v.setFloat32(p, fr(1 / iscale), true);
    }
  }
}

function i8(b: Uint8Array, p: number): number {
  return ((b[p] as number) << 24) >> 24;
}

function u16(b: Uint8Array, p: number): number {
  return (b[p] as number) | ((b[p + 1] as number) << 8);
}

const f32Box = new Float32Array(1);
const i32Box = new Int32Array(f32Box.buffer);

function f32At(b: Uint8Array, p: number): number {
  i32Box[0] =
    (b[p] as number) |
    ((b[p + 1] as number) << 8) |
    ((b[p + 2] as number) << 16) |
    ((b[p + 3] as number) << 24);
  return f32Box[0] as number;
}

/** The dot product of weight row at byte `wp` of `w` and activation row at byte `ap` of `a`. */
export function dotRow(
  type: WeightType,
  w: Uint8Array,
  wp: number,
  a: Uint8Array,
  ap: number,
  n: number,
): number {
  let acc = 0;
  switch (type) {
    case GgmlType.F16: {
      const n8 = n & ~7;
      const l = [0, 0, 0, 0, 0, 0, 0, 0];
      const h = F16_TO_F32;
      for (let k = 0; k < n8; k++) {
        const p = (h[u16(w, wp + 2 * k)] as number) * f32At(a, ap + 4 * k);
        l[k & 7] = fr((l[k & 7] as number) + p);
      }
      const t = [0, 1, 2, 3].map((i) => fr((l[i] as number) + (l[i + 4] as number))) as number[];
      acc = fr(fr((t[0] as number) + (t[1] as number)) + fr((t[2] as number) + (t[3] as number)));
      for (let k = n8; k < n; k++) {
        acc = fr(acc + (h[u16(w, wp + 2 * k)] as number) * f32At(a, ap + 4 * k));
      }
      return acc;
    }
    case GgmlType.Q8_0:
    case GgmlType.Q4_0: {
      const q8 = type === GgmlType.Q8_0;
      const bw = q8 ? 34 : 18;
      for (let b = 0; b < n / 32; b++, wp += bw, ap += 36) {
        let s = 0;
        if (q8) {
          for (let j = 0; j < 32; j++) s += i8(w, wp + 2 + j) * i8(a, ap + 4 + j);
        } else {
          for (let j = 0; j < 16; j++) {
            const q = w[wp + 2 + j] as number;
            s += ((q & 0xf) - 8) * i8(a, ap + 4 + j) + ((q >> 4) - 8) * i8(a, ap + 20 + j);
          }
        }
        const dd = fr((F16_TO_F32[u16(w, wp)] as number) * f32At(a, ap));
        acc = fr(acc + fr(fr(s) * dd));
      }
      return acc;
    }
    case GgmlType.Q4_1:
      for (let b = 0; b < n / 32; b++, wp += 20, ap += 40) {
        let s = 0;
        for (let j = 0; j < 16; j++) {
          const q = w[wp + 4 + j] as number;
          s += (q & 0xf) * i8(a, ap + 8 + j) + (q >> 4) * i8(a, ap + 24 + j);
        }
        const dx = f32At(a, ap);
        acc = fr(acc + fr(fr(s) * fr((F16_TO_F32[u16(w, wp)] as number) * dx)));
        acc = fr(acc + fr((F16_TO_F32[u16(w, wp + 2)] as number) * f32At(a, ap + 4)));
      }
      return acc;
    case GgmlType.Q4_K:
    case GgmlType.Q5_K: {
      // Q5_K: Q4_K's layout with qh[32] before the nibbles, a fifth bit per value
      const five = type === GgmlType.Q5_K;
      const bw = five ? 176 : 144;
      const qs = five ? 48 : 16;
      for (let b = 0; b < n / 256; b++, wp += bw, ap += 292) {
        let s = 0;
        let m = 0;
        for (let c = 0; c < 4; c++) {
          // 32 bytes: low nibbles are values 64c..64c+31, high nibbles the next 32
          const qp = wp + qs + 32 * c;
          const xp = ap + 4 + 64 * c;
          let t0 = 0;
          let t1 = 0;
          for (let l = 0; l < 32; l++) {
            const q = w[qp + l] as number;
            const h = five ? (w[wp + 16 + l] as number) >> (2 * c) : 0;
            t0 += ((q & 0xf) | ((h & 1) << 4)) * i8(a, xp + l);
            t1 += ((q >> 4) | ((h & 2) << 3)) * i8(a, xp + 32 + l);
          }
          s += q4kScale(w, wp + 4, 2 * c) * t0 + q4kScale(w, wp + 4, 2 * c + 1) * t1;
          const bs = ap + 260 + 8 * c;
          m +=
            q4kMin(w, wp + 4, 2 * c) * (i16(a, bs) + i16(a, bs + 2)) +
            q4kMin(w, wp + 4, 2 * c + 1) * (i16(a, bs + 4) + i16(a, bs + 6));
        }
        const dx = f32At(a, ap);
        acc = fr(acc + fr(fr((F16_TO_F32[u16(w, wp)] as number) * dx) * fr(s)));
        acc = fr(acc - fr(fr((F16_TO_F32[u16(w, wp + 2)] as number) * dx) * fr(m)));
      }
      return acc;
    }
    case GgmlType.Q6_K:
      for (let b = 0; b < n / 256; b++, wp += 210, ap += 292) {
        let s = 0;
        for (let h = 0; h < 2; h++) {
          const ql = wp + 64 * h;
          const qh = wp + 128 + 32 * h;
          const sc = wp + 192 + 8 * h;
          const xp = ap + 4 + 128 * h;
          for (let g = 0; g < 2; g++) {
            // values 128h + 32k + 16g + l (l < 16) for the four quarters k
            let t0 = 0;
            let t1 = 0;
            let t2 = 0;
            let t3 = 0;
            for (let l = 16 * g; l < 16 * g + 16; l++) {
              const qa = w[ql + l] as number;
              const qb = w[ql + 32 + l] as number;
              const hb = w[qh + l] as number;
              t0 += ((qa & 0xf) | ((hb & 3) << 4)) * i8(a, xp + l) - 32 * i8(a, xp + l);
              t1 +=
                ((qb & 0xf) | (((hb >> 2) & 3) << 4)) * i8(a, xp + 32 + l) -
                32 * i8(a, xp + 32 + l);
              t2 +=
                ((qa >> 4) | (((hb >> 4) & 3) << 4)) * i8(a, xp + 64 + l) - 32 * i8(a, xp + 64 + l);
              t3 += ((qb >> 4) | ((hb >> 6) << 4)) * i8(a, xp + 96 + l) - 32 * i8(a, xp + 96 + l);
            }
            s +=
              i8(w, sc + g) * t0 +
              i8(w, sc + g + 2) * t1 +
              i8(w, sc + g + 4) * t2 +
              i8(w, sc + g + 6) * t3;
          }
        }
        const dd = fr((F16_TO_F32[u16(w, wp + 208)] as number) * f32At(a, ap));
        acc = fr(acc + fr(dd * fr(s)));
      }
      return acc;
    case Q6_K_LANES:
      // the same integer s as Q6_K's (activations in value order), then the same float steps
      for (let b = 0; b < n / 256; b++, wp += 210, ap += 292) {
        let s = 0;
        for (let g = 0; g < 16; g++) {
          let t = 0;
          for (let v = 16 * g; v < 16 * g + 16; v++) {
            t += (q6kLanesValue(w, wp, v) - 32) * i8(a, ap + 4 + v);
          }
          s += i8(w, wp + 192 + g) * t;
        }
        const dd = fr((F16_TO_F32[u16(w, wp + 208)] as number) * f32At(a, ap));
        acc = fr(acc + fr(dd * fr(s)));
      }
      return acc;
    default:
      throw new Error(`dotRow: weight type ${type} has no quantised dot`);
  }
}

function i16(b: Uint8Array, p: number): number {
  return (u16(b, p) << 16) >> 16;
}

/**
 * out[i * ldo + j] = dot(x row i, w row j) for a quantised (non-F32) `type`, with `scratch`
 * holding m activation rows. Shapes are checked by the caller (checkMatmulQ).
 */
export function matmulQJs(
  out: Float32Array,
  ldo: number,
  x: Float32Array,
  w: Uint8Array,
  type: WeightType,
  m: number,
  n: number,
  d: number,
  scratch: Uint8Array,
): void {
  const ar = actRowBytes(type, n);
  const wr = rowBytes(type, n);
  for (let i = 0; i < m; i++) quantizeActRow(type, x, i * n, n, scratch, i * ar);
  for (let j = 0; j < d; j++) {
    for (let i = 0; i < m; i++) out[i * ldo + j] = dotRow(type, w, j * wr, scratch, i * ar, n);
  }
}

export type MatmulQArgs = Parameters<Kernels["matmulQ"]>;

function bytesOverlap(
  a: ArrayBufferView,
  aBytes: number,
  b: ArrayBufferView,
  bBytes: number,
): boolean {
  return a.buffer === b.buffer && rangesOverlap(a.byteOffset, aBytes, b.byteOffset, bBytes);
}

/** Shape, type and aliasing checks of `matmulQ`, O(1), run on every call by both implementations. */
export function checkMatmulQ(...[out, ldo, x, w, type, m, n, d, scratch]: MatmulQArgs): void {
  if (!((m | 0) === m && (n | 0) === n && (d | 0) === d && (ldo | 0) === ldo && (m | n | d) >= 0)) {
    throw new InvariantError(`matmulQ: bad shape m=${m} n=${n} d=${d} ldo=${ldo}`);
  }
  if (!isResidentType(type) || type === GgmlType.F32) {
    throw new InvariantError(`matmulQ: weight type ${type} is not a quantised type`);
  }
  if (n % blockValues(type) !== 0) {
    throw new InvariantError(`matmulQ: n=${n} is not a whole number of ${type} blocks`);
  }
  if (ldo < d) throw new InvariantError(`matmulQ: ldo=${ldo} < d=${d}`);
  const outLen = m === 0 ? 0 : (m - 1) * ldo + d;
  const wBytes = d * rowBytes(type, n);
  const sBytes = m * actRowBytes(type, n);
  if (out.length < outLen || x.length < m * n || w.length < wBytes || scratch.length < sBytes) {
    throw new InvariantError(
      `matmulQ: arrays too short for m=${m} n=${n} d=${d} ldo=${ldo} ` +
        `(out ${out.length}, x ${x.length}, w ${w.length}, scratch ${scratch.length})`,
    );
  }
  if (
    bytesOverlap(out, outLen * 4, x, m * n * 4) ||
    bytesOverlap(out, outLen * 4, w, wBytes) ||
    bytesOverlap(out, outLen * 4, scratch, sBytes) ||
    bytesOverlap(scratch, sBytes, x, m * n * 4) ||
    bytesOverlap(scratch, sBytes, w, wBytes)
  ) {
    throw new InvariantError("matmulQ: out or scratch aliases another argument");
  }
}
