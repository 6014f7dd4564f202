#!/usr/bin/env python3
"""Independent reference data from llama.cpp (via llama-cpp-python) for kvshrink.

Writes two files:

  tests/golden/llama_cpp_logits.json
      For each prompt: the prompt text, whether it is ChatML-formatted, the llama.cpp
      prompt token ids, a 32-token greedy (argmax) continuation that does NOT stop at
      EOS, and for EVERY position of prompt+continuation (teacher-forced: the whole
      sequence is evaluated in one context) the top-20 (token id, raw logit) pairs,
      sorted by logit descending, logits rounded to 5 decimals.
      topk[i] holds the logits produced after consuming token i of
      all_ids = prompt_ids + greedy_ids, i.e. the distribution for token i+1.

  tests/golden/llama_cpp_perplexity.json
      The first 2048 tokens (no BOS) of /usr/share/common-licenses/GPL-3 (Debian
      base-files; not copied into the repo), evaluated in a single 2048-token context
      (positions 0..2047), perplexity = exp(mean_{i=1..2047} -log softmax(logits[i-1])[tok[i]])
      computed in float64 from llama.cpp's logits.

Requires: pip install llama-cpp-python numpy   (jinja2 optional, used to cross-check the
ChatML rendering against the GGUF's tokenizer.chat_template).

Usage: python3 scripts/golden_llama_cpp.py [--model PATH] [--out-dir tests/golden]
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

from golden_common import sha256_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(REPO, "models", "smollm2-135m-instruct.gguf")
GPL3 = "/usr/share/common-licenses/GPL-3"

N_GEN = 32
TOPK = 20
PPL_TOKENS = 2048

# SmolLM2 ChatML with the default system turn (engine-and-formats.md §B5).
SYSTEM_TURN = (
    "<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
)


def chatml(user):
    return SYSTEM_TURN + "<|im_start|>user\n" + user + "<|im_end|>\n" + "<|im_start|>assistant\n"


PROMPTS = [
    # (name, chat?, user message or raw text)
    ("chat_capital", True, "What is the capital of France?"),
    ("chat_haiku", True, "Write a haiku about the ocean."),
    ("chat_hashtable", True, "Explain what a hash table is in one sentence."),
    ("chat_colors", True, "List the three primary colors."),
    ("plain_capital", False, "The capital of France is"),
    ("plain_code", False, 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("plain_numbers", False, "1, 2, 3, 4, 5, 6, 7, 8,"),
    ("plain_list", False, "Here is a list of fruits:\n1. Apple\n2. Banana\n3."),
]


def topk_pairs(row, k=TOPK):
    # Stable order: by logit descending, ties by token id ascending.
    idx = np.argpartition(-row, k)[:k]
    idx = sorted(idx.tolist(), key=lambda t: (-float(row[t]), t))
    return [[int(t), round(float(row[t]), 5)] for t in idx]


def check_chat_template(llm):
    """Render the GGUF's own chat template with jinja2 and compare with chatml()."""
    tmpl = llm.metadata.get("tokenizer.chat_template")
    if tmpl is None:
        return "no tokenizer.chat_template in GGUF"
    try:
        import jinja2
    except ImportError:
        return "jinja2 not installed; not checked"
    env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False)
    t = env.from_string(tmpl)
    for _, chat, text in PROMPTS:
        if not chat:
            continue
        got = t.render(messages=[{"role": "user", "content": text}],
                       add_generation_prompt=True, bos_token="<|im_start|>",
                       eos_token="<|im_end|>")
        if got != chatml(text):
            return "MISMATCH: GGUF template renders %r" % got
    return "matches GGUF tokenizer.chat_template"


def golden_logits(model_path, out_path):
    llm = Llama(model_path=model_path, n_ctx=4096, n_batch=512, n_threads=2,
                logits_all=True, seed=0, verbose=False)
    add_bos = bool(llm._model.add_bos_token())
    n_vocab = llm.n_vocab()
    tmpl_check = check_chat_template(llm)
    print("add_bos_token (from GGUF):", add_bos, "| n_vocab:", n_vocab)
    print("chat template check:", tmpl_check)

    records = []
    n_positions = 0
    for name, chat, text in PROMPTS:
        prompt = chatml(text) if chat else text
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

        # Greedy continuation, incremental decode, no EOS stop.
        llm.reset()
        llm.eval(prompt_ids)
        gen = []
        for _ in range(N_GEN):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            gen.append(nxt)
            llm.eval([nxt])

        # Teacher-forced: full sequence in one fresh context.
        all_ids = list(prompt_ids) + gen
        llm.reset()
        llm.eval(all_ids)
        logits = np.array(llm.scores[: len(all_ids)], dtype=np.float32, copy=True)
        topk = [topk_pairs(logits[i]) for i in range(len(all_ids))]

        # Consistency: teacher-forced argmax vs incremental greedy choice.
        n_p = len(prompt_ids)
        disagree = [j for j in range(N_GEN) if int(np.argmax(logits[n_p - 1 + j])) != gen[j]]
        gen_text = llm.detokenize(gen, special=True).decode("utf-8", errors="replace")
        print("=" * 70)
        print("[%s] chat=%s prompt_tokens=%d" % (name, chat, n_p))
        print("prompt:", repr(text))
        print("greedy:", repr(gen_text))
        if disagree:
            print("NOTE: teacher-forced argmax differs from incremental greedy at steps", disagree)
        records.append({
            "name": name,
            "chat": chat,
            "user_message" if chat else "text": text,
            "prompt": prompt,
            "prompt_ids": [int(t) for t in prompt_ids],
            "greedy_ids": gen,
            "greedy_text": gen_text,
            "teacher_forced_argmax_disagreements": disagree,
            "topk": topk,
        })
        n_positions += len(all_ids)

    doc = {
        "source": "llama.cpp via llama-cpp-python (scripts/golden_llama_cpp.py)",
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256_file(model_path),
        "llama_cpp_python_version": llama_cpp.__version__,
        "settings": {"n_ctx": 4096, "n_batch": 512, "n_ubatch": 512, "n_threads": 2,
                     "logits_all": True, "seed": 0, "flash_attn": False,
                     "tokenize_special": True, "add_bos": add_bos},
        "chat_template_check": tmpl_check,
        "n_vocab": n_vocab,
        "n_gen": N_GEN,
        "topk": TOPK,
        "layout": ("topk[i] = top-20 [token_id, logit] of the raw logits after token i of "
                   "prompt_ids+greedy_ids (predicting token i+1), sorted descending; "
                   "logits rounded to 5 decimals; greedy = argmax, incremental decode, "
                   "no EOS stop; topk from one teacher-forced pass over the full sequence"),
        "notes": [
            "llama.cpp (this version, CPU, Q4_1 weights) gives different logits for a 1-token "
            "ubatch than for ubatches of >=2 tokens: incremental decode vs the teacher-forced "
            "pass differ by mean |dlogit| ~0.15-0.19, max ~1.3 on the chat prompts; ubatch sizes "
            "2..512 give bit-identical rows. Hence teacher_forced_argmax_disagreements (near-ties, "
            "margins ~0.1).",
            "A float64 numpy forward pass over the dequantized GGUF weights (scratch diagnostic) "
            "differs from these logits by mean |dlogit| ~0.17-0.23, max ~2.6, with 96-100% "
            "argmax agreement per position (llama.cpp quantizes activations to Q8 for the "
            "Q4_1/Q8_0 dot products and keeps an f16 KV cache). Compare an fp32-dequant engine "
            "with tolerances of that order, not bit-exactly.",
        ],
        "n_positions_total": n_positions,
        "prompts": records,
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("=" * 70)
    print("wrote %s (%d prompts, %d positions, %d bytes)"
          % (out_path, len(records), n_positions, os.path.getsize(out_path)))
    del llm


def golden_perplexity(model_path, out_path, n_batch=512):
    with open(GPL3, "rb") as f:
        raw = f.read()
    text_sha = hashlib.sha256(raw).hexdigest()
    llm = Llama(model_path=model_path, n_ctx=PPL_TOKENS, n_batch=n_batch, n_threads=2,
                logits_all=True, seed=0, verbose=False)
    toks = llm.tokenize(raw, add_bos=False, special=False)
    if len(toks) < PPL_TOKENS:
        sys.exit("GPL-3 tokenizes to only %d tokens" % len(toks))
    toks = [int(t) for t in toks[:PPL_TOKENS]]
    llm.reset()
    llm.eval(toks)  # one context, positions 0..2047, decoded in n_batch-sized chunks
    logits = np.array(llm.scores[:PPL_TOKENS], dtype=np.float64, copy=True)
    m = logits[:-1].max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(logits[:-1] - m).sum(axis=1)))
    tgt = np.array(toks[1:])
    nll = lse - logits[np.arange(PPL_TOKENS - 1), tgt]
    mean_nll = float(nll.mean())
    ppl = math.exp(mean_nll)
    # A few chunked means help localise a mismatch later.
    chunks = {"%d-%d" % (a + 1, b): float(nll[a:b].mean())
              for a, b in [(0, 511), (511, 1023), (1023, 1535), (1535, 2047)]}
    doc = {
        "source": "llama.cpp via llama-cpp-python (scripts/golden_llama_cpp.py)",
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256_file(model_path),
        "llama_cpp_python_version": llama_cpp.__version__,
        "text_file": GPL3,
        "text_file_sha256": text_sha,
        "n_tokens": PPL_TOKENS,
        "add_bos": False,
        "tokenize_special": False,
        "n_ctx": PPL_TOKENS,
        "n_batch": n_batch,
        "n_ubatch": min(n_batch, 512),
        "n_threads": 2,
        "flash_attn": False,
        "definition": ("single context, positions 0..2047; ppl = exp(mean over i=1..2047 of "
                       "-log softmax(logits[i-1])[token[i]]), float64"),
        "mean_nll": mean_nll,
        "perplexity": ppl,
        "mean_nll_by_target_range": chunks,
        "token_ids": toks,
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("perplexity (GPL-3, first %d tokens): %.6f   mean NLL %.6f" % (PPL_TOKENS, ppl, mean_nll))
    print("mean NLL by target range:", {k: round(v, 4) for k, v in chunks.items()})
    print("wrote", out_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out-dir", default=os.path.join(REPO, "tests", "golden"))
    ap.add_argument("--skip-logits", action="store_true")
    ap.add_argument("--skip-perplexity", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    print("llama_cpp_python", llama_cpp.__version__, "| model", args.model)
    if not args.skip_logits:
        golden_logits(args.model, os.path.join(args.out_dir, "llama_cpp_logits.json"))
    if not args.skip_perplexity:
        golden_perplexity(args.model, os.path.join(args.out_dir, "llama_cpp_perplexity.json"))


if __name__ == "__main__":
    main()
