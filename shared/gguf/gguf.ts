/**
 * GGUF v2/v3 reader and writer. Pure: works on bytes, no I/O.
 *
 * Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
 * metadata key/values, tensor infos (name, n_dims, ne[] with ne[0] fastest, type, offset), padding
 * to `general.alignment` (default 32), then tensor data. A tensor with ne = [n, d] is row-major
 * (d rows of n values), which is the `W (d, n)` layout the kernels expect.
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types as numbered by the GGUF spec. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufTypeId = (typeof GgufType)[keyof typeof GgufType];

/** Tensor element types (ggml_type) that this engine can read. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q8_0: 8,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;
export type GgmlTypeId = (typeof GgmlType)[keyof typeof GgmlType];

/** [values per block, bytes per block] of each readable type. */
export const GGML_BLOCKS: Readonly<Record<GgmlTypeId, readonly [number, number]>> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.Q4_0]: [32, 18],
  [GgmlType.Q4_1]: [32, 20],
  [GgmlType.Q8_0]: [32, 34],
  [GgmlType.Q4_K]: [256, 144],
  [GgmlType.Q5_K]: [256, 176],
  [GgmlType.Q6_K]: [256, 210],
  [GgmlType.BF16]: [1, 2],
};

const GGML_TYPE_NAMES: Record<number, string> = {
  0: "F32",
  1: "F16",
  2: "Q4_0",
  3: "Q4_1",
  6: "Q5_0",
  7: "Q5_1",
  8: "Q8_0",
  9: "Q8_1",
  10: "Q2_K",
  11: "Q3_K",
  12: "Q4_K",
  13: "Q5_K",
  14: "Q6_K",
  15: "Q8_K",
  30: "BF16",
};

export function ggmlTypeName(type: number): string {
  return GGML_TYPE_NAMES[type] ?? `type ${type}`;
}

/** A metadata value. 64-bit integers are returned as numbers when they are safe, else bigint. */
export type GgufValue = number | bigint | string | boolean | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** ne[] in ggml order: dims[0] is the fastest-varying (row length). */
  dims: number[];
  type: number;
  /** Absolute byte offset of the tensor data in the file. */
  offset: number;
  numElements: number;
  numBytes: number;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufValue>;
  /** Value type of each metadata key (for arrays: ARRAY), kept so a file can be rewritten. */
  metadataTypes: Map<string, GgufTypeId>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  dataOffset: number;
}

export class GgufError extends Error {
  override name = "GgufError";
}

/** A tensor's data runs past the end of the file (a truncated file). */
export class GgufTruncatedError extends GgufError {}

// ---------------------------------------------------------------------------------------------
// Reading

class Reader {
  pos = 0;
  private readonly view: DataView;
  // ignoreBOM keeps a leading U+FEFF: it is a token text of its own in some vocabularies
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number, what: string): void {
    if (this.pos + n > this.bytes.byteLength) {
      throw new GgufError(`truncated GGUF: ${what} at byte ${this.pos} runs past the end`);
    }
  }
  u8(): number {
    this.need(1, "u8");
    return this.view.getUint8(this.pos++);
  }
  u32(): number {
    this.need(4, "u32");
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    this.need(8, "u64");
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  count(what: string): number {
    const v = this.u64();
    if (v > BigInt(this.bytes.byteLength)) throw new GgufError(`implausible ${what}: ${v}`);
    return Number(v);
  }
  string(): string {
    const n = this.count("string length");
    this.need(n, "string");
    const s = this.decoder.decode(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  value(type: number): GgufValue {
    const v = this.view;
    const p = this.pos;
    switch (type) {
      case GgufType.UINT8:
        return this.u8();
      case GgufType.INT8:
        this.need(1, "i8");
        this.pos += 1;
        return v.getInt8(p);
      case GgufType.UINT16:
        this.need(2, "u16");
        this.pos += 2;
        return v.getUint16(p, true);
      case GgufType.INT16:
        this.need(2, "i16");
        this.pos += 2;
        return v.getInt16(p, true);
      case GgufType.UINT32:
        return this.u32();
      case GgufType.INT32:
        this.need(4, "i32");
        this.pos += 4;
        return v.getInt32(p, true);
      case GgufType.FLOAT32:
        this.need(4, "f32");
        this.pos += 4;
        return v.getFloat32(p, true);
      case GgufType.BOOL:
        return this.u8() !== 0;
      case GgufType.STRING:
        return this.string();
      case GgufType.UINT64:
      case GgufType.INT64: {
        this.need(8, "i64");
        this.pos += 8;
        const b = type === GgufType.UINT64 ? v.getBigUint64(p, true) : v.getBigInt64(p, true);
        return b <= BigInt(Number.MAX_SAFE_INTEGER) && b >= -BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(b)
          : b;
      }
      case GgufType.FLOAT64:
        this.need(8, "f64");
        this.pos += 8;
        return v.getFloat64(p, true);
      case GgufType.ARRAY: {
        const itemType = this.u32();
        const n = this.count("array length");
        const out: GgufValue[] = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.value(itemType);
        return out;
      }
      default:
        throw new GgufError(`unknown GGUF metadata value type ${type} at byte ${p}`);
    }
  }
}

/** Bytes taken by `numElements` values of a ggml type, or throws for unsupported types. */
export function tensorByteSize(type: number, numElements: number): number {
  const block = Object.hasOwn(GGML_BLOCKS, type) ? GGML_BLOCKS[type as GgmlTypeId] : undefined;
  if (!block) {
    throw new GgufError(
      `unsupported tensor type ${ggmlTypeName(type)}: this engine reads ` +
        `${Object.keys(GGML_BLOCKS)
          .map((t) => ggmlTypeName(Number(t)))
          .join(", ")}`,
    );
  }
  const [qk, bytes] = block;
  if (numElements % qk !== 0) {
    throw new GgufError(`${ggmlTypeName(type)} tensor size is not a multiple of ${qk}`);
  }
  return (numElements / qk) * bytes;
}

/**
 * Parses the header, metadata and tensor table. Tensor data stays in `bytes`. With
 * `headerOnly`, `bytes` may be just the start of the file (metadata and tensor table): tensor
 * data bounds are checked against `fileBytes` when it is given (the whole file's size).
 */
export function parseGguf(
  bytes: Uint8Array,
  opts: { headerOnly?: boolean; fileBytes?: number } = {},
): GgufFile {
  const r = new Reader(bytes);
  if (bytes.byteLength < 4 || r.u32() !== GGUF_MAGIC) {
    throw new GgufError("not a GGUF file (bad magic)");
  }
  const version = r.u32();
  if (version !== 2 && version !== 3) throw new GgufError(`unsupported GGUF version ${version}`);
  const numTensors = r.count("tensor count");
  const numKv = r.count("metadata count");
  const metadata = new Map<string, GgufValue>();
  const metadataTypes = new Map<string, GgufTypeId>();
  for (let i = 0; i < numKv; i++) {
    const key = r.string();
    const type = r.u32();
    metadata.set(key, r.value(type));
    metadataTypes.set(key, type as GgufTypeId);
  }
  const alignment = Number(metadata.get("general.alignment") ?? GGUF_DEFAULT_ALIGNMENT);
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw new GgufError(`bad general.alignment ${alignment}`);
  }
  const infos: Omit<GgufTensorInfo, "offset">[] = [];
  const relOffsets: number[] = [];
  for (let i = 0; i < numTensors; i++) {
    const name = r.string();
    const nDims = r.u32();
    if (nDims < 1 || nDims > 4) throw new GgufError(`tensor ${name}: bad dimension count ${nDims}`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(r.count(`tensor ${name} dim`));
    const type = r.u32();
    const numElements = dims.reduce((a, b) => a * b, 1);
    let numBytes: number;
    try {
      numBytes = tensorByteSize(type, numElements);
    } catch (e) {
      throw new GgufError(`tensor ${name}: ${(e as Error).message}`);
    }
    infos.push({ name, dims, type, numElements, numBytes });
    relOffsets.push(Number(r.u64()));
  }
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  infos.forEach((info, i) => {
    const offset = dataOffset + (relOffsets[i] as number);
    const end = opts.headerOnly ? (opts.fileBytes ?? Infinity) : bytes.byteLength;
    if (offset + info.numBytes > end) {
      throw new GgufTruncatedError(
        `tensor ${info.name}: data runs past the end of the file (truncated?)`,
      );
    }
    tensors.set(info.name, { ...info, offset });
  });
  return { version, metadata, metadataTypes, tensors, alignment, dataOffset };
}

/** IEEE half -> float. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float -> IEEE half, round to nearest even (as numpy/ggml do). */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

// ---------------------------------------------------------------------------------------------
// Writing

export type GgufMetadataEntry =
  | { key: string; type: Exclude<GgufTypeId, 9>; value: GgufValue }
  | { key: string; type: 9; itemType: Exclude<GgufTypeId, 9>; value: GgufValue[] };

export interface GgufTensorInput {
  name: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  type: typeof GgmlType.F32 | typeof GgmlType.F16;
  data: Float32Array;
}

class Writer {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  pos = 0;
  private readonly encoder = new TextEncoder();
  private grow(n: number): void {
    if (this.pos + n <= this.buf.byteLength) return;
    let size = this.buf.byteLength * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u32(v: number): void {
    this.grow(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  u64(v: number | bigint): void {
    this.grow(8);
    this.view.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
  }
  string(s: string): void {
    const b = this.encoder.encode(s);
    this.u64(b.byteLength);
    this.bytes(b);
  }
  bytes(b: Uint8Array): void {
    this.grow(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
  pad(alignment: number): void {
    const n = (alignment - (this.pos % alignment)) % alignment;
    this.grow(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
  }
  value(type: number, v: GgufValue): void {
    this.grow(8);
    const p = this.pos;
    const num = () => {
      if (typeof v !== "number" && typeof v !== "bigint" && typeof v !== "boolean") {
        throw new GgufError(`expected a number for GGUF type ${type}, got ${typeof v}`);
      }
      return Number(v);
    };
    switch (type) {
      case GgufType.UINT8:
        this.view.setUint8(p, num());
        this.pos += 1;
        return;
      case GgufType.INT8:
        this.view.setInt8(p, num());
        this.pos += 1;
        return;
      case GgufType.UINT16:
        this.view.setUint16(p, num(), true);
        this.pos += 2;
        return;
      case GgufType.INT16:
        this.view.setInt16(p, num(), true);
        this.pos += 2;
        return;
      case GgufType.UINT32:
        this.view.setUint32(p, num(), true);
        this.pos += 4;
        return;
      case GgufType.INT32:
        this.view.setInt32(p, num(), true);
        this.pos += 4;
        return;
      case GgufType.FLOAT32:
        this.view.setFloat32(p, num(), true);
        this.pos += 4;
        return;
      case GgufType.BOOL:
        this.view.setUint8(p, v ? 1 : 0);
        this.pos += 1;
        return;
      case GgufType.STRING:
        if (typeof v !== "string") throw new GgufError("expected a string");
        this.string(v);
        return;
      case GgufType.UINT64:
        this.view.setBigUint64(p, BigInt(v as number | bigint), true);
        this.pos += 8;
        return;
      case GgufType.INT64:
        this.view.setBigInt64(p, BigInt(v as number | bigint), true);
        this.pos += 8;
        return;
      case GgufType.FLOAT64:
        this.view.setFloat64(p, num(), true);
        this.pos += 8;
        return;
      default:
        throw new GgufError(`cannot write GGUF value type ${type}`);
    }
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

/** Serialises metadata and tensors into a GGUF v3 file. Deterministic: same input, same bytes. */
export function writeGguf(
  metadata: readonly GgufMetadataEntry[],
  tensors: readonly GgufTensorInput[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): Uint8Array {
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  const meta = metadata.filter((m) => m.key !== "general.alignment");
  const withAlignment: GgufMetadataEntry[] =
    alignment === GGUF_DEFAULT_ALIGNMENT
      ? meta
      : [...meta, { key: "general.alignment", type: GgufType.UINT32, value: alignment }];
  w.u64(withAlignment.length);
  for (const m of withAlignment) {
    w.string(m.key);
    w.u32(m.type);
    if (m.type === GgufType.ARRAY) {
      w.u32(m.itemType);
      w.u64(m.value.length);
      for (const item of m.value) w.value(m.itemType, item);
    } else {
      w.value(m.type, m.value);
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (n !== t.data.length)
      throw new GgufError(`tensor ${t.name}: dims ${t.dims} != ${t.data.length}`);
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
    offsets.push(offset);
    offset += Math.ceil(tensorByteSize(t.type, n) / alignment) * alignment;
  }
  w.pad(alignment);
  for (const t of tensors) {
    const n = t.data.length;
    const out = new Uint8Array(tensorByteSize(t.type, n));
    const view = new DataView(out.buffer);
    if (t.type === GgmlType.F32) {
      for (let i = 0; i < n; i++) view.setFloat32(i * 4, t.data[i] as number, true);
    } else {
      for (let i = 0; i < n; i++) view.setUint16(i * 2, f32ToF16(t.data[i] as number), true);
    }
    w.bytes(out);
    w.pad(alignment);
  }
  return w.result();
}

// ---------------------------------------------------------------------------------------------
// Typed metadata accessors

export function metaNumber(file: GgufFile, key: string): number | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  throw new GgufError(`metadata ${key}: expected a number`);
}

export function requireNumber(file: GgufFile, key: string): number {
  const v = metaNumber(file, key);
  if (v === undefined) throw new GgufError(`missing required metadata ${key}`);
  return v;
}

export function metaString(file: GgufFile, key: string): string | undefined {
  const v = file.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new GgufError(`metadata ${key}: expected a string`);
  return v;
}
