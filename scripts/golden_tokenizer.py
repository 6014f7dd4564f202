#!/usr/bin/env python3
"""Golden tokenizer data from llama.cpp (through llama-cpp-python) for tests/e2e/tokenizer_golden_test.cpp.

Loads the GGUF vocab only, tokenizes a fixed set of strings (hand-picked cases plus seeded random
mixes) with llama_tokenize(add_special=False, parse_special=True), renders a few id lists back with
llama_token_to_piece, and writes tests/golden/tokenizer_smollm2.json:

  llama_cpp_version, model_file, model_sha256
  bos_id, eos_id, add_bos (llama_vocab_get_add_bos), end_of_generation_ids (llama_vocab_is_eog)
  encode: [{text | text_hex, parse_special, ids}]   text_hex holds input that is not valid UTF-8
  decode: [{ids, render_special, bytes_hex}]        concatenated llama_token_to_piece pieces

Usage: scripts/golden_tokenizer.py [--model models/smollm2-135m-instruct.gguf] [--out tests/golden/...]
"""

import argparse
import ctypes
import json
import pathlib
import random

import llama_cpp

from golden_common import sha256_file

REPO = pathlib.Path(__file__).resolve().parent.parent

CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer in one word.<|im_end|>\n"
    "<|im_start|>assistant\n"
)

CODE_SAMPLE = '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b


if __name__ == "__main__":
\tprint(fibonacci(30))  # 832040
'''

CPP_SAMPLE = """#include <vector>
int main() {
  std::vector<int> v{1, 2, 3};
  for (auto& x : v) x *= 2;   // double
  return v[0] != 2;
}
"""

WHITESPACE = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "a  b",
    "a   b",
    "hello world  ",
    "trailing spaces   ",
    "   leading spaces",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\r\nwindows\r\n",
    " \n \n\t \u00a0x",
    "non-breaking\u00a0space and\u2003em space and\u3000ideographic",
]

PROSE = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a land far, far away, there lived a small robot who loved to read.",
    "Tokenization is the first step: text goes in, integers come out.",
]

NUMBERS = [
    "3.14159",
    "12345678",
    " 123",
    "Call 555-0199 or +1 (800) 123-4567 before 11:59pm on 2024-12-31.",
    "1,000,000 and 1.5e-10 and 0xDEADBEEF and v2.0.1",
    "\u0661\u0662\u0663 \u0966\u0967 \u2160\u2161 \u00bd \u2460",  # Arabic-Indic, Devanagari digits, Roman numerals, fractions
]

CODE = [
    CODE_SAMPLE,
    CPP_SAMPLE,
    "    indented four\n        indented eight\n\tindented tab",
    "x=1;y=2;z=x+y;print(f'{z:>10}')",
    '{"key": [1, 2, {"nested": null}], "ok": true}',
    "<div class=\"a\">&amp; &lt;tag&gt;</div>",
]

CONTRACTIONS_AND_PUNCTUATION = [
    "I'm don't THEY'RE",
    "we'll you've she'd it's can't WON'T I'M I'LL",
    "'s 't 're 've 'm 'll 'd",
    "rock'n'roll o'clock ''quoted'' '",
    "Wait... what?!?! (really) [yes] {no} <maybe>",
    "--- *** ### !!! ??? ... ,,, ;;; ::: ~~~",
    "\u00bfQu\u00e9? \u00a1Hola! \u00ab guillemets \u00bb \u2014 em-dash \u2026 ellipsis",
    "\u201csmart quotes\u201d and \u2018single\u2019",
]

EMOJI_AND_SCRIPTS = [
    "I love pizza \U0001f355 and \U0001f389 parties!",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f3f3\ufe0f\u200d\U0001f308 flag, \U0001f44d\U0001f3fd thumbs",
    "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00e5ngstr\u00f6m",
    "cafe\u0301 (combining acute)",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\U0002ebf0\U0002ee5d're CJK extension I",  # letters since Unicode 15.1
    "math: \u2200x \u2208 \u211d, x\u00b2 \u2265 0 \u2192 \u221a(x\u00b2) = |x|",
]

SPECIAL_TOKENS = [
    "<|im_start|>user\nhi<|im_end|>",
    CHATML_PROMPT,
    "before<|endoftext|>after",
    "<|endoftext|>",
    "<repo_name>kvshrink<file_sep>src/main.cpp\n<filename>",
    "<|im_start|><|im_end|><|im_start|>",
    "<|im_start|>assistant\nSure! Here is the answer.<|im_end|>\n<|endoftext|>",
    "almost special <|im_start> <im_end|> <|im_start|",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
]

HAND_PICKED = WHITESPACE + PROSE + NUMBERS + CODE + CONTRACTIONS_AND_PUNCTUATION + EMOJI_AND_SCRIPTS + SPECIAL_TOKENS

# Without parse_special llama.cpp pre-tokenizes control-token text like any other text.
NO_PARSE_SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>",
    "before<|endoftext|>after",
]

# Input that is not valid UTF-8: llama.cpp reads each bad byte as U+FFFD.
INVALID_UTF8 = [
    b"caf\xc3",
    b"\xff\xfe abc",
    b"ab\xe2\x82 cd",
    b"\x80\x80x",
]

# Seeded random mixes of characters from every class the pre-tokenizer distinguishes.
RANDOM_POOL = (
    list("abcXYZ") + list("0123456789") + [" ", " ", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "'LL"]
    + list(".,!?-_()[]{}<>/\\\"#@$%^&*+=~`|;:") + ["\u00e9", "\u00df", "\u0416", "\u4e2d", "\u3042", "\u0661"]
    + ["\U0001f600", "\u200d", "\ufe0f", "\u0301", "\u00a0", "\u2003", "\u00bd", "\u2160"]
    + ["<|im_end|>", "<|endoftext|>"]
)


def random_strings(count, seed=20241122):
    rng = random.Random(seed)
    return ["".join(rng.choice(RANDOM_POOL) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def long_text():
    words = PROSE + NUMBERS + CODE + CONTRACTIONS_AND_PUNCTUATION + EMOJI_AND_SCRIPTS
    rng = random.Random(7)
    return " ".join(rng.choice(words) for _ in range(200))


def piece(vocab, token, special):
    buffer = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
    if n < 0:
        raise RuntimeError(f"piece of token {token} is longer than {len(buffer)} bytes")
    return buffer.raw[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models/smollm2-135m-instruct.gguf"))
    parser.add_argument("--out", default=str(REPO / "tests/golden/tokenizer_smollm2.json"))
    args = parser.parse_args()

    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    vocab = llm._model.vocab

    def tokenize(data, parse_special):
        return llm.tokenize(data, add_bos=False, special=parse_special)

    encode = []
    for text in HAND_PICKED + random_strings(60) + [long_text()]:
        encode.append({"text": text, "parse_special": True, "ids": tokenize(text.encode(), True)})
    for text in NO_PARSE_SPECIAL:
        encode.append({"text": text, "parse_special": False, "ids": tokenize(text.encode(), False)})
    for data in INVALID_UTF8:
        encode.append({"text_hex": data.hex(), "parse_special": True, "ids": tokenize(data, True)})

    decode = []
    decode_sources = ["Hello, world!", CHATML_PROMPT, "\U0001f468\u200d\U0001f469\u200d\U0001f467 caf\u00e9",
                      "before<|endoftext|>after<repo_name>"]
    decode_ids = [tokenize(text.encode(), True) for text in decode_sources]
    emoji_ids = tokenize("\U0001f355".encode(), True)
    decode_ids.append(emoji_ids[:1])  # a token that is only part of a UTF-8 sequence
    decode_ids.append(list(range(0, 40)))
    for ids in decode_ids:
        for special in (False, True):
            data = b"".join(piece(vocab, token, special) for token in ids)
            decode.append({"ids": ids, "render_special": special, "bytes_hex": data.hex()})

    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    golden = {
        "llama_cpp_version": llama_cpp.__version__,
        "model_file": pathlib.Path(args.model).name,
        "model_sha256": sha256_file(args.model),
        "vocab_size": n_vocab,
        "bos_id": llama_cpp.llama_vocab_bos(vocab),
        "eos_id": llama_cpp.llama_vocab_eos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "ids_with_add_special_hi": llm.tokenize(b"hi", add_bos=True, special=True),
        "end_of_generation_ids": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
        "encode": encode,
        "decode": decode,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(encode)} encode cases, {len(decode)} decode cases")


if __name__ == "__main__":
    main()
