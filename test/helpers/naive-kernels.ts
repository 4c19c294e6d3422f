/** Naive float64 reference kernels (the oracle for kernel tests; also a test backend). */
import { KernelMemoryError, type Kernels } from "../../shared/model/kernels.ts";
import { dequantizeRow, rowBytes } from "../../shared/model/quant.ts";

export function createNaiveKernels(capacityBytes = 1 << 30): Kernels {
  let used = 0;
  const take = (bytes: number) => {
    const b = Math.ceil(bytes / 16) * 16;
    if (used + b > capacityBytes) throw new KernelMemoryError("naive arena full");
    used += b;
  };
  return {
    name: "naive",
    get usedBytes() {
      return used;
    },
    capacityBytes,
    canAlloc: (n) => used + Math.ceil(n / 16) * 16 <= capacityBytes,
    alloc(n) {
      take(n * 4);
      return new Float32Array(n);
    },
    allocInt32(n) {
      take(n * 4);
      return new Int32Array(n);
    },
    allocBytes(n) {
      take(n);
      return new Uint8Array(n);
    },
    residentType: (type) => type,
    toResident() {},
    /** Dequantised weights times unquantised x, in float64: the error bound's reference. */
    matmulQ(out, ldo, x, w, type, m, n, d) {
      const row = new Float32Array(n);
      const rb = rowBytes(type, n);
      for (let j = 0; j < d; j++) {
        dequantizeRow(type, w, j * rb, n, row, 0);
        for (let i = 0; i < m; i++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += (x[i * n + k] as number) * (row[k] as number);
          out[i * ldo + j] = s;
        }
      }
    },
    matmul(out, x, w, m, n, d) {
      for (let i = 0; i < m; i++)
        for (let j = 0; j < d; j++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += (x[i * n + k] as number) * (w[j * n + k] as number);
          out[i * d + j] = s;
        }
    },
    swiglu(out, gu, m, ff) {
      for (let r = 0; r < m; r++)
        for (let i = 0; i < ff; i++) {
          const g = gu[r * 2 * ff + i] as number;
          out[r * ff + i] = (g / (1 + Math.exp(-g))) * (gu[r * 2 * ff + ff + i] as number);
        }
    },
    attention(out, q, kc, vc, table, numKeys, nh, nkv, hd, bs, scores) {
      const kvDim = nkv * hd;
      for (let h = 0; h < nh; h++) {
        const kvh = Math.floor(h / (nh / nkv));
        let max = Number.NEGATIVE_INFINITY;
        for (let t = 0; t < numKeys; t++) {
          const row = ((table[Math.floor(t / bs)] as number) * bs + (t % bs)) * kvDim + kvh * hd;
          let s = 0;
          for (let i = 0; i < hd; i++) s += (q[h * hd + i] as number) * (kc[row + i] as number);
          scores[t] = s / Math.sqrt(hd);
          max = Math.max(max, scores[t] as number);
        }
        let sum = 0;
        for (let t = 0; t < numKeys; t++) {
          scores[t] = Math.exp((scores[t] as number) - max);
          sum += scores[t] as number;
        }
        for (let i = 0; i < hd; i++) {
          let acc = 0;
          for (let t = 0; t < numKeys; t++) {
            const row = ((table[Math.floor(t / bs)] as number) * bs + (t % bs)) * kvDim + kvh * hd;
            acc += ((scores[t] as number) / sum) * (vc[row + i] as number);
          }
          out[h * hd + i] = acc;
        }
      }
    },
  };
}
