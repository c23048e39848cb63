#!/usr/bin/env python3
"""Makes testdata/fuzz.qwen3.json: seeded random strings with the ids Hugging Face `tokenizers`
gives them (add_special_tokens=False), to compare exotic characters (Unicode classes, NFC,
whitespace variants, special tokens mid-text) beyond the hand-picked cases.

Two steps. The texts use characters assigned in Unicode 14.0 (Python 3.11's unicodedata) and no
combining marks beyond a fixed old list: tokenizers' NFC tables are older than utf8proc's, so marks
it does not know are ordered differently (a documented divergence, see tokenizer.h).
  # here, with Python 3.11:
  python3 tests/unit/tokenizer/make_fuzz_cases.py texts --out /tmp/fuzz_texts.json
  # where `tokenizers` is installed (the GPU machine's image has it):
  python3 tests/unit/tokenizer/make_fuzz_cases.py ids --texts /tmp/fuzz_texts.json \
      --tokenizer ../shared/data/qwen3-tokenizer/tokenizer.json \
      --out tests/unit/tokenizer/testdata/fuzz.qwen3.json
"""
import argparse
import json
import random
import unicodedata

SPECIAL_CHARS = [
    " ", "\t", "\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x85", "\xa0", "\u1680", "\u180e",
    "\u2000", "\u2009", "\u200a", "\u200b", "\u200d", "\u2028", "\u2029", "\u202f", "\u205f",
    "\u3000", "\ufeff", "'", "'s", "'S", "'ll", "'LL", "'Re", "'ve", "'M", "'d", "'D", "\u017f",
    "\u212a", "\u0301", "\u0308", "\u0327", "e\u0301", "A\u030a", "\u1100\u1161\u11a8",
    "\u0660", "\u00b2", "\u2160", "\uff11", "\u0966", "\U0001d7ce", "\u3002", "\uff0c", "\u2014",
    "\u201c", "\u2026", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469", "\ufe0f",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "<|im_", "|>", "<think>",
]


def known_to_both(c):
    # Assigned in Unicode 14 and not a combining mark: tokenizers' NFC tables are older than
    # utf8proc's, so marks it does not know would be reordered differently.
    return unicodedata.category(c) not in ("Cn", "Cs") and unicodedata.combining(c) == 0


def random_char(rng):
    k = rng.randrange(12)
    if k <= 2:
        return chr(0x20 + rng.randrange(95))
    if k == 3:
        return rng.choice("sStTlLdDmMvVrReE'")
    if k <= 5:
        return rng.choice(SPECIAL_CHARS)  # old, well-known characters, marks included
    while True:
        if k == 6:
            c = chr(0x4E00 + rng.randrange(0x5200))
        elif k == 7:
            c = chr(0x3000 + rng.randrange(0x100))
        elif k == 8:
            c = chr(0x1F300 + rng.randrange(0x300))
        elif k == 9:
            c = chr(0x80 + rng.randrange(0x2F80))  # Latin, Greek, Cyrillic, Indic, ...
        else:
            c = chr(rng.randrange(0x110000))
        if known_to_both(c):
            return c


def make_texts(args):
    if unicodedata.unidata_version != "14.0.0":
        raise SystemExit(f"needs Unicode 14.0.0 data (Python 3.11), not {unicodedata.unidata_version}")
    rng = random.Random(args.seed)
    texts = []
    for i in range(args.count):
        n = rng.randrange(1, 40) if i % 50 else rng.randrange(300, 1500)
        texts.append("".join(random_char(rng) for _ in range(n)))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"seed": args.seed, "unicode_version": unicodedata.unidata_version,
                   "cases": [{"text": t} for t in texts]}, f, ensure_ascii=True)


def add_ids(args):
    import tokenizers
    from tokenizers import Tokenizer

    with open(args.texts, encoding="utf-8") as f:
        doc = json.load(f)
    texts = [c["text"] for c in doc["cases"]]
    tok = Tokenizer.from_file(args.tokenizer)
    encs = tok.encode_batch(texts, add_special_tokens=False)
    doc["tokenizers_version"] = tokenizers.__version__
    doc["cases"] = [{"text": t, "ids": e.ids} for t, e in zip(texts, encs)]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
    print(f"{len(texts)} cases, tokenizers {tokenizers.__version__}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="step", required=True)
    t = sub.add_parser("texts")
    t.add_argument("--out", required=True)
    t.add_argument("--count", type=int, default=2000)
    t.add_argument("--seed", type=int, default=20261123)
    i = sub.add_parser("ids")
    i.add_argument("--texts", required=True)
    i.add_argument("--tokenizer", required=True)
    i.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.step == "texts":
        make_texts(args)
    else:
        add_ids(args)


if __name__ == "__main__":
    main()
