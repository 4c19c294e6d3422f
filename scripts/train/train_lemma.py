#!/usr/bin/python3
"""Trains the lemma-chain MoE model (RaaS reproduction, README "KV-cache policies") and exports it.

A llama-architecture transformer with Mixtral-style experts (softmax router over all experts,
top-2, weights renormalised; SwiGLU experts), RMSNorm, RoPE on adjacent pairs (llama.cpp's
"norm" rope, so no q/k permutation), untied output. Its vocabulary is the task's characters
(shared/eval/lemma-chain.ts, read from the data file's first line). The loss covers the answer
tokens only (teacher forcing), weighted: --critical-weight on the digits whose errors compound
(a, b and c of each line, the final line's), --lookup-weight on the two facts read from the
prompt (the seed value in line 0 = G's digit, value(f) after "*" = F's digit). Every --eval-every steps the log
shows, on 64 validation problems, answer-token and critical-token accuracy and the share whose
every answer token is the argmax, which is exactly the share greedy decoding reproduces whole.

Data: token ids written by `npx tsx scripts/lemma-data.ts --seed 1 --count 60000 > train.jsonl`
(and --seed 2 for validation): the one generator is the TypeScript one.

Runs on Debian's python3-torch (1.13, `/usr/bin/python3`; PyPI is not needed). Resumable: a
checkpoint (weights, optimiser, step and sizes) is written every --ckpt-every steps to --dir and
picked up on restart; --init starts a new phase from another run's weights with a fresh
optimiser and schedule. On a shared, loaded CPU use --threads 1 (2 threads ran 4x slower).

  nice -n 5 /usr/bin/python3 scripts/train/train_lemma.py train --dir /tmp/lemma \
      --train /tmp/lemma-train.jsonl --val /tmp/lemma-val.jsonl --steps 3000 --threads 1 \
      --critical-weight 2 --lookup-weight 12 >> /tmp/lemma/log 2>&1
  /usr/bin/python3 scripts/train/train_lemma.py breakdown --dir /tmp/lemma --val /tmp/lemma-val.jsonl

The committed model's last phase (README "KV-cache policies" lists the earlier ones): from a
checkpoint that computes the chain, --init it with --lr 1.5e-3 --critical-weight 2
--lookup-weight 4 --steps 1500 (every validation problem whole from step 200; stopped at 400).
  /usr/bin/python3 scripts/train/train_lemma.py export --dir /tmp/lemma \
      --out models/lemma-moe.gguf --fixture test/fixtures/lemma-moe-logits.json --val /tmp/lemma-val.jsonl

`export` writes the GGUF (F32 tensors) and a logits fixture: PyTorch's logits at every position
of a few held-out problems, which the engine must reproduce (test/unit/lemma-model.test.ts).
"""
import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

from gguf_write import write_gguf
from lemma_model import DIMS, Model

# the answer's critical tokens: a digit read after one of these (a, b and c of a line, the final
# line's L(K), value(f) and product); the counters and punctuation are trivial
CRITICAL_AFTER = ":+=A*"


def load(path):
    with open(path) as f:
        head = json.loads(f.readline())
        rows = [json.loads(line) for line in f if line.strip()]
    return head, rows


def batch_of(rows, idx):
    T = max(len(rows[i]["ids"]) for i in idx)
    ids = torch.zeros(len(idx), T, dtype=torch.long)
    tgt = torch.full((len(idx), T), -100, dtype=torch.long)
    for r, i in enumerate(idx):
        s = rows[i]["ids"]
        ids[r, : len(s)] = torch.tensor(s)
        n = rows[i]["num_prompt"]
        tgt[r, n - 1 : len(s) - 1] = torch.tensor(s[n:])
    return ids, tgt


def critical_mask(vocab, ids, tgt):
    """True where the target is a critical digit (read after one of CRITICAL_AFTER)."""
    after = torch.tensor([vocab.index(c) for c in CRITICAL_AFTER])
    digits = torch.tensor([vocab.index(c) for c in "0123456789"])
    return (tgt != -100) & torch.isin(ids, after) & torch.isin(tgt, digits)


def lookup_mask(vocab, ids, tgt):
    """True where the target is a fact read from the prompt: the seed value (G's digit) after
    the answer's first "00:" (three tokens after ">") and value(f) (F's digit) after "*"."""
    first = (ids == vocab.index(":")) & (torch.roll(ids, 3, dims=1) == vocab.index(">"))
    return (tgt != -100) & (first | (ids == vocab.index("*")))


def evaluate(model, vocab, val, n=64):
    """Teacher-forced on n held-out problems: accuracy over all answer tokens and over the
    critical ones, and the share of problems whose every answer token is the argmax, which is
    exactly the share that greedy decoding reproduces in full."""
    tok = crit = crit_n = tok_n = whole = 0
    with torch.no_grad():
        for s in range(0, n, 32):
            vi, vt = batch_of(val, list(range(s, min(n, s + 32))))
            pred = model(vi).argmax(-1)
            m = vt != -100
            cm = critical_mask(vocab, vi, vt)
            ok = (pred == vt) | ~m
            tok += ((pred == vt) & m).sum().item()
            tok_n += m.sum().item()
            crit += ((pred == vt) & cm).sum().item()
            crit_n += cm.sum().item()
            whole += ok.all(-1).sum().item()
    return tok / tok_n, crit / crit_n, whole / n


def breakdown(a):
    """Teacher-forced argmax accuracy per kind of answer token on --n validation problems, as
    one JSON line: which skill a checkpoint lacks (greedy errors compound from the first one)."""
    torch.set_num_threads(a.threads)
    head, val = load(a.val)
    vocab = head["vocab"]
    st = torch.load(os.path.join(a.dir, "ckpt.pt"))
    model = Model(st.get("dims", DIMS), len(vocab))
    model.load_state_dict(st["model"])
    model.eval()
    after = lambda ids, c: ids == vocab.index(c)  # noqa: E731
    kinds = {}
    with torch.no_grad():
        for s in range(0, a.n, 32):
            ids, tgt = batch_of(val, list(range(s, min(a.n, s + 32))))
            ok = model(ids).argmax(-1) == tgt
            crit = critical_mask(vocab, ids, tgt)
            seed = lookup_mask(vocab, ids, tgt) & after(ids, ":")
            masks = {
                "seed_lookup": seed,
                "a": crit & after(ids, ":") & ~seed,
                "b": crit & after(ids, "+"),
                "c": crit & after(ids, "="),
                "final_lemma": crit & after(ids, "A"),
                "phoenix_lookup": crit & after(ids, "*"),
                "other": (tgt != -100) & ~crit,
            }
            for k, m in masks.items():
                n0, r0 = kinds.get(k, (0, 0))
                kinds[k] = (n0 + m.sum().item(), r0 + (ok & m).sum().item())
    tok, crit, whole = evaluate(model, vocab, val, a.n)
    out = {k: round(r / max(1, n), 4) for k, (n, r) in kinds.items()}
    out.update(step=st["step"], problems=a.n, critical=round(crit, 4), greedy_whole=round(whole, 4))
    print(json.dumps(out))


def train(a):
    torch.set_num_threads(a.threads)
    head, rows = load(a.train)
    _, val = load(a.val)
    os.makedirs(a.dir, exist_ok=True)
    ck = os.path.join(a.dir, "ckpt.pt")
    torch.manual_seed(0)
    dims = dims_of(a)
    st = torch.load(ck) if os.path.exists(ck) else None
    if st is not None or a.init:
        dims = (st or torch.load(a.init)).get("dims", DIMS)
    vocab = head["vocab"]
    model = Model(dims, len(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    step = 0
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        print(f"resumed at step {step}", flush=True)
    elif a.init:
        # a second phase: another run's weights, a fresh optimiser and schedule
        model.load_state_dict(torch.load(a.init)["model"])
        print(f"initialised from {a.init}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params} dims {dims}", flush=True)
    rng = random.Random(step)
    t0 = time.time()
    while step < a.steps:
        lr = a.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, tgt = batch_of(rows, [rng.randrange(len(rows)) for _ in range(a.batch)])
        # answer tokens weigh 1, critical digits --critical-weight (their errors compound), the
        # two facts read from the prompt --lookup-weight (2 tokens in about 60, the last skill learnt)
        w = (tgt != -100).float() + (a.critical_weight - 1) * critical_mask(vocab, ids, tgt).float()
        w = torch.where(lookup_mask(vocab, ids, tgt), torch.full_like(w, a.lookup_weight), w)
        ce = F.cross_entropy(model(ids).flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="none")
        loss = (ce * w.flatten()).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % a.log_every == 0:
            secs = (time.time() - t0) / a.log_every
            line = f"step {step} loss {loss.item():.4f} lr {lr:.5f} {secs:.2f}s/step"
            if step % a.eval_every == 0:
                tok, crit, whole = evaluate(model, vocab, val)
                line += f" val_tok {tok:.4f} val_critical {crit:.4f} val_greedy_whole {whole:.3f}"
            print(line, flush=True)
            t0 = time.time()
        if step % a.ckpt_every == 0 or step == a.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "dims": dims}, ck + ".tmp")
            os.replace(ck + ".tmp", ck)


def dims_of(a):
    d = dict(DIMS)
    for k in ("dim", "layers", "heads", "kv_heads", "ff"):
        if getattr(a, k) is not None:
            d[k] = getattr(a, k)
    return d


def export(a):
    head, _ = load(a.train) if a.train else load(a.val)
    _, val = load(a.val)
    st = torch.load(os.path.join(a.dir, "ckpt.pt"))
    d = st.get("dims", DIMS)
    model = Model(d, len(head["vocab"]))
    model.load_state_dict(st["model"])
    model.eval()
    vocab = head["vocab"]
    types = [2, 3, 3] + [1] * (len(vocab) - 3)
    kvs = [
        ("general.architecture", "llama"),
        ("general.name", "lemma-moe"),
        ("general.file_type", 0),
        ("llama.context_length", d["ctx"]),
        ("llama.embedding_length", d["dim"]),
        ("llama.block_count", d["layers"]),
        ("llama.feed_forward_length", d["ff"]),
        ("llama.attention.head_count", d["heads"]),
        ("llama.attention.head_count_kv", d["kv_heads"]),
        ("llama.rope.freq_base", d["rope_theta"]),
        ("llama.rope.dimension_count", d["dim"] // d["heads"]),
        ("llama.attention.layer_norm_rms_epsilon", d["eps"]),
        ("llama.expert_count", d["experts"]),
        ("llama.expert_used_count", d["top_k"]),
        ("llama.vocab_size", len(vocab)),
        ("tokenizer.ggml.model", "llama"),
        ("tokenizer.ggml.tokens", vocab),
        ("tokenizer.ggml.scores", [0.0] * len(vocab)),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.bos_token_id", head["bos"]),
        ("tokenizer.ggml.eos_token_id", head["eos"]),
        ("tokenizer.ggml.unknown_token_id", 0),
        ("tokenizer.ggml.add_bos_token", True),
        ("tokenizer.ggml.add_eos_token", False),
        ("tokenizer.ggml.add_space_prefix", False),
        ("tokenizer.chat_template", head["chat_template"]),
    ]
    ts = [("token_embd.weight", model.emb.weight)]
    for i, b in enumerate(model.blocks):
        p = f"blk.{i}."
        ts += [
            (p + "attn_norm.weight", b.attn_norm.weight),
            (p + "attn_q.weight", b.wq.weight),
            (p + "attn_k.weight", b.wk.weight),
            (p + "attn_v.weight", b.wv.weight),
            (p + "attn_output.weight", b.wo.weight),
            (p + "ffn_norm.weight", b.ffn_norm.weight),
            (p + "ffn_gate_inp.weight", b.router.weight),
            (p + "ffn_gate_exps.weight", b.w_gate),
            (p + "ffn_up_exps.weight", b.w_up),
            (p + "ffn_down_exps.weight", b.w_down),
        ]
    ts += [("output_norm.weight", model.norm.weight), ("output.weight", model.out.weight)]
    write_gguf(a.out, kvs, ts)
    cases = []
    with torch.no_grad():
        for r in val[:3]:
            ids = r["ids"][: r["num_prompt"] + 20]
            logits = model(torch.tensor([ids]))[0]
            rows = list(range(len(ids) - 24, len(ids)))
            cases.append({"ids": ids, "rows": rows, "logits": [[round(float(v), 5) for v in logits[r]] for r in rows]})
    with open(a.fixture, "w") as f:
        json.dump({"provenance": "scripts/train/train_lemma.py export (PyTorch %s)" % torch.__version__, "cases": cases}, f)
    print(f"wrote {a.out} and {a.fixture}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["train", "export", "breakdown"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--train")
    ap.add_argument("--val", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--critical-weight", type=float, default=1.0)
    ap.add_argument("--lookup-weight", type=float, default=1.0)
    ap.add_argument("--init", help="start from this checkpoint's weights (fresh optimiser)")
    ap.add_argument("--dim", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--ff", type=int)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--out")
    ap.add_argument("--fixture")
    ap.add_argument("--n", type=int, default=256, help="breakdown: validation problems")
    a = ap.parse_args()
    {"train": train, "export": export, "breakdown": breakdown}[a.cmd](a)
