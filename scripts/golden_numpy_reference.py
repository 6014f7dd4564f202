#!/usr/bin/env python3
"""Exact-arithmetic reference for the forward pass: a float64 numpy Llama forward over the
dequantized GGUF weights (gguf-py's dequantizers), written independently of the C++ engine.

llama.cpp (tests/golden/llama_cpp_logits.json) rounds activations to 8 bits inside every
quantized matmul and keeps K/V in f16, so its logits differ from exact arithmetic by ~0.2 on
average. This reference has no such rounding: kvshrink's f32 forward must match it closely.

Writes tests/golden/numpy_f64_logits.json: for every prompt of llama_cpp_logits.json,
teacher-forced over prompt_ids + greedy_ids, the top-20 (id, logit) at every position.

Usage: pip install numpy gguf; python3 scripts/golden_numpy_reference.py [MODEL]
"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from golden_common import sha256_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "models/smollm2-135m-instruct.gguf")
TOPK = 20


class Model:
    def __init__(self, path):
        reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in reader.tensors}
        field = lambda key: reader.fields[key].parts[-1][0]
        self.n_layers = int(field("llama.block_count"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_head_kv = int(field("llama.attention.head_count_kv"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(field("llama.rope.freq_base"))
        self.embd = self.weight("token_embd.weight")
        self.head_dim = self.embd.shape[1] // self.n_head

    def weight(self, name):
        t = self.tensors[name]
        return dequantize(t.data, t.tensor_type).astype(np.float64)  # [rows, cols] = [out, in]

    def rms_norm(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, n_heads):  # adjacent pairs (2i, 2i+1), GGUF llama convention
        n, d = x.shape[0], self.head_dim
        theta = np.arange(n)[:, None] * self.base ** (-2.0 * np.arange(d // 2) / d)[None, :]
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        pairs = x.reshape(n, n_heads, d // 2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        return np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).reshape(n, n_heads * d)

    def logits(self, ids):
        n, d, group = len(ids), self.head_dim, self.n_head // self.n_head_kv
        x = self.embd[ids]
        causal = np.triu(np.full((n, n), -np.inf), 1)
        for layer in range(self.n_layers):
            w = lambda s: self.weight(f"blk.{layer}.{s}.weight")
            h = self.rms_norm(x, w("attn_norm"))
            q = self.rope(h @ w("attn_q").T, self.n_head)
            k = self.rope(h @ w("attn_k").T, self.n_head_kv)
            v = h @ w("attn_v").T
            out = np.zeros((n, self.n_head * d))
            for head in range(self.n_head):
                kv = head // group
                scores = q[:, head * d:(head + 1) * d] @ k[:, kv * d:(kv + 1) * d].T / np.sqrt(d) + causal
                p = np.exp(scores - scores.max(-1, keepdims=True))
                out[:, head * d:(head + 1) * d] = (p / p.sum(-1, keepdims=True)) @ v[:, kv * d:(kv + 1) * d]
            x = x + out @ w("attn_output").T
            h = self.rms_norm(x, w("ffn_norm"))
            gate, up = h @ w("ffn_gate").T, h @ w("ffn_up").T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w("ffn_down").T
        return self.rms_norm(x, self.weight("output_norm.weight")) @ self.embd.T


def main():
    golden = json.loads((ROOT / "tests/golden/llama_cpp_logits.json").read_text())
    model = Model(MODEL)
    out = {"source": "float64 numpy forward over gguf-py dequantized weights (scripts/golden_numpy_reference.py)",
           "model_sha256": sha256_file(MODEL),
           "layout": "topk[i] = top-20 [id, logit] after token i of prompt_ids + greedy_ids (llama.cpp's), descending",
           "prompts": []}
    for prompt in golden["prompts"]:
        ids = prompt["prompt_ids"] + prompt["greedy_ids"]
        logits = model.logits(ids)
        top = np.argsort(-logits, axis=1)[:, :TOPK]
        out["prompts"].append({"name": prompt["name"], "ids": ids,
                               "topk": [[[int(t), round(float(logits[i, t]), 5)] for t in top[i]] for i in range(len(ids))]})
        print(prompt["name"], len(ids), "positions")
    (ROOT / "tests/golden/numpy_f64_logits.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
