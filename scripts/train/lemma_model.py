"""The lemma-chain model of scripts/train/train_lemma.py: a llama-architecture transformer with
Mixtral-style experts (softmax router over all experts, top-2, weights renormalised; SwiGLU
experts), RMSNorm, RoPE on adjacent pairs (llama.cpp's "norm" rope), untied output."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DIMS = dict(dim=64, layers=3, heads=4, kv_heads=2, experts=4, top_k=2, ff=96, ctx=512, rope_theta=10000.0, eps=1e-5)


def rope_tables(ctx, hd, theta):
    half = hd // 2
    freq = torch.tensor([theta ** (-(2 * i) / hd) for i in range(half)], dtype=torch.float64)
    ang = torch.arange(ctx, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    # x: (B, H, T, hd); rotate adjacent pairs (2i, 2i+1)
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    c = cos[: x.shape[2]][None, None]
    s = sin[: x.shape[2]][None, None]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        dim, H, KV, hd = d["dim"], d["heads"], d["kv_heads"], d["dim"] // d["heads"]
        self.H, self.KV, self.hd = H, KV, hd
        self.attn_norm = RMSNorm(dim, d["eps"])
        self.wq = nn.Linear(dim, H * hd, bias=False)
        self.wk = nn.Linear(dim, KV * hd, bias=False)
        self.wv = nn.Linear(dim, KV * hd, bias=False)
        self.wo = nn.Linear(H * hd, dim, bias=False)
        self.ffn_norm = RMSNorm(dim, d["eps"])
        E, ff = d["experts"], d["ff"]
        self.router = nn.Linear(dim, E, bias=False)
        self.w_gate = nn.Parameter(torch.randn(E, ff, dim) / math.sqrt(dim))
        self.w_up = nn.Parameter(torch.randn(E, ff, dim) / math.sqrt(dim))
        self.w_down = nn.Parameter(torch.randn(E, dim, ff) / math.sqrt(ff))
        self.top_k = d["top_k"]

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.wk(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.wv(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.H // self.KV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.wo(o)
        h = self.ffn_norm(x)
        probs = self.router(h).softmax(-1)
        w, idx = probs.topk(self.top_k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        # each expert runs on the tokens routed to it; outputs weighted by the renormalised gates
        flat = h.reshape(-1, h.shape[-1])
        gate = torch.zeros_like(probs).scatter(-1, idx, w).reshape(-1, probs.shape[-1])
        out = torch.zeros_like(flat)
        for e in range(self.w_gate.shape[0]):
            rows = gate[:, e].nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            he = flat[rows]
            ye = (F.silu(he @ self.w_gate[e].t()) * (he @ self.w_up[e].t())) @ self.w_down[e].t()
            out.index_add_(0, rows, ye * gate[rows, e : e + 1])
        return x + out.view_as(x)


class Model(nn.Module):
    def __init__(self, d, vocab):
        super().__init__()
        self.d = d
        self.emb = nn.Embedding(vocab, d["dim"])
        self.blocks = nn.ModuleList([Block(d) for _ in range(d["layers"])])
        self.norm = RMSNorm(d["dim"], d["eps"])
        self.out = nn.Linear(d["dim"], vocab, bias=False)
        cos, sin = rope_tables(d["ctx"], d["dim"] // d["heads"], d["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        return self.out(self.norm(x))
