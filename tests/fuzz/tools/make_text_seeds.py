#!/usr/bin/env python3
"""Writes the seed corpora of the text-input fuzzers into tests/fuzz/corpus/ (committed).

Sources: the checkpoint fixtures under tests/fixtures/hf (config.json, real safetensors headers
written by Hugging Face's safetensors), a make-model checkpoint when one is given, hand-written
configs for the layouts the fixtures lack (llama3 rope_scaling, MiniCPM4 longrope +
sparse_config, transformers 5 rope_parameters), small tokenizer.json files in the layout of
Qwen3's, and pieces of the novel in the shared data folder.

  tests/fuzz/tools/make_text_seeds.py [--make-model-dir DIR]
"""
import argparse
import json
import os
import struct

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def write(fuzzer, name, data):
    d = os.path.join(CORPUS, fuzzer)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_seeds(make_model_dir):
    files = []
    for arch in ("qwen3", "qwen2", "llama3"):
        files.append((f"hf_{arch}", os.path.join(ROOT, "tests/fixtures/hf", arch, "model.safetensors")))
    if make_model_dir:
        files.append(("make_model_tiny", os.path.join(make_model_dir, "model.safetensors")))
    for name, path in files:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        # Odd first byte: 2-byte data length (< 64 KiB), a reserved byte, the header JSON; the
        # fuzzer rebuilds the file. The real header keeps its small tensors (names, dtypes,
        # shapes as written), laid out again one after the other in file order.
        kept = {"__metadata__": header["__metadata__"]} if "__metadata__" in header else {}
        data_len = 0
        tensors = sorted((v["data_offsets"][0], k, v) for k, v in header.items()
                         if k != "__metadata__")
        for _, k, v in tensors:
            size = v["data_offsets"][1] - v["data_offsets"][0]
            if data_len + size >= (1 << 16):
                continue
            kept[k] = dict(v, data_offsets=[data_len, data_len + size])
            data_len += size
        text = json.dumps(kept, separators=(",", ":")).encode()
        write("safetensors_header", name,
              bytes([1, data_len & 0xff, (data_len >> 8) & 0xff, 0]) + text)
    # Even first byte: a whole small file, as on disk.
    header = json.dumps({
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]},
        "c": {"dtype": "F16", "shape": [0, 4], "data_offsets": [20, 20]},
    }, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    write("safetensors_header", "small_file",
          bytes([0]) + struct.pack("<Q", len(header)) + header + bytes(range(20)))


def config_seeds(make_model_dir):
    for arch in ("qwen3", "qwen2", "llama3"):
        with open(os.path.join(ROOT, "tests/fixtures/hf", arch, "config.json")) as f:
            write("model_config", f"hf_{arch}", f.read())
    if make_model_dir:
        with open(os.path.join(make_model_dir, "config.json")) as f:
            write("model_config", "make_model_tiny", f.read())
    llama = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "torch_dtype": "bfloat16",
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "tie_word_embeddings": False}
    write("model_config", "llama3_8b", json.dumps(llama, indent=2))
    minicpm = {
        "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "vocab_size": 73448,
        "hidden_size": 4096, "intermediate_size": 16384, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 65536, "rope_theta": 10000.0, "rms_norm_eps": 1e-06,
        "torch_dtype": "bfloat16", "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 256,
        "rope_scaling": {"rope_type": "longrope", "long_factor": [1.0, 1.5, 2.0, 4.0],
                         "short_factor": [1.0, 1.0, 1.0, 1.0],
                         "original_max_position_embeddings": 32768},
        "sparse_config": {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1,
                          "block_size": 64, "window_size": 2048, "topk": 64,
                          "use_nope": False, "dense_len": 8192}}
    write("model_config", "minicpm4_longrope_sparse", json.dumps(minicpm, indent=2))
    v5 = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 1000, "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "max_position_embeddings": 4096, "dtype": "float16",
          "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}}
    write("model_config", "transformers5_rope_parameters", json.dumps(v5))


def byte_level_chars():
    # GPT-2's bytes_to_unicode.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json_seeds():
    ch = byte_level_chars()
    vocab = {ch[b]: b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), (ch[0x20], "w"), ("a", "a")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    qwen_like = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": 263, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True},
            {"id": 264, "content": "<think>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [f"{a} {b}" for a, b in merges]}}
    text = "\0hello world <|endoftext|> aaa <think>é\u0301 你好！"
    write("tokenizer_json", "qwen_like", json.dumps(qwen_like, ensure_ascii=False) + text)
    gpt2 = json.loads(json.dumps(qwen_like))
    gpt2["normalizer"] = None
    gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}
    gpt2["model"]["merges"] = [[a, b] for a, b in merges]
    gpt2["model"]["ignore_merges"] = True
    gpt2["added_tokens"][1].update({"lstrip": True, "rstrip": True, "single_word": True,
                                    "normalized": True, "special": False})
    write("tokenizer_json", "gpt2_like", json.dumps(gpt2) + "\0Hello  world\n\nit's 42!")
    small = {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
             "model": {"vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": ["a b"],
                       "unk_token": "<unk>", "fuse_unk": True}}
    write("tokenizer_json", "unk_fuse", json.dumps(small) + "\0abcab")
    split_string = json.loads(json.dumps(qwen_like))
    split_string["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"String": "\n"}
    split_string["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}]}
    write("tokenizer_json", "split_string", json.dumps(split_string) + "\0a\nb\n\nhello")


def tokenizer_encode_seeds():
    novel = os.path.join(ROOT, "..", "shared", "data", "pride_and_prejudice.txt")
    with open(novel, encoding="utf-8") as f:
        text = f.read()
    for i, (start, length) in enumerate([(0, 300), (5000, 1200), (200000, 800), (len(text) - 700, 700)]):
        write("tokenizer_encode", f"novel_{i}", text[start:start + length])
    write("tokenizer_encode", "chat", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|endoftext|>")
    write("tokenizer_encode", "cjk", "「こんにちは」と言った。你好，世界！한국어 텍스트。　全角ＡＢＣ～")
    write("tokenizer_encode", "marks", "e\u0301 a\u0308\u0323 \u1e9b\u0323 Å Ω ﬁ <|im_end|>\u0338 \u0915\u093c")
    write("tokenizer_encode", "emoji_ws", "👩\u200d👩\u200d👧 🇫🇷\t\t  \r\n\u00a0\u2028x\u3000y 12345 3.14 don't WE'LL")
    write("tokenizer_encode", "code", "def f(x):\n    return {'a': [1, 2, 3]}  # ok\n\tif x >= 0: pass\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model-dir", help="a `make-model --shape tiny --layers 1` checkpoint")
    args = ap.parse_args()
    safetensors_seeds(args.make_model_dir)
    config_seeds(args.make_model_dir)
    tokenizer_json_seeds()
    tokenizer_encode_seeds()
    print("text seeds written under", CORPUS)


if __name__ == "__main__":
    main()
