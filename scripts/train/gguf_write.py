"""A minimal GGUF (format v3) writer for scripts/train/train_lemma.py: metadata key/values and
F32 tensors, names and shapes as llama.cpp's Mixtral conversion writes them."""
import struct


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, value):
    out = gguf_string(key)
    if isinstance(value, bool):
        return out + struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return out + struct.pack("<II", 4, value)
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)
    if isinstance(value, str):
        return out + struct.pack("<I", 8) + gguf_string(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(gguf_string(v) for v in value)
        if all(isinstance(v, int) for v in value):
            return out + struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
        return out + struct.pack("<IIQ", 9, 6, len(value)) + b"".join(struct.pack("<f", v) for v in value)
    raise TypeError(key)


def write_gguf(path, kvs, tensors):
    align = 32
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    header += b"".join(gguf_kv(k, v) for k, v in kvs)
    infos = b""
    offset = 0
    blobs = []
    for name, t in tensors:
        t = t.detach().float().contiguous()
        dims = list(reversed(t.shape))  # ggml ne0 is the innermost (last) axis
        infos += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, offset)
        data = t.numpy().tobytes()
        blobs.append(data)
        offset += (len(data) + align - 1) // align * align
    body = header + infos
    body += b"\0" * ((align - len(body) % align) % align)
    with open(path, "wb") as f:
        f.write(body)
        for data in blobs:
            f.write(data + b"\0" * ((align - len(data) % align) % align))
