#!/usr/bin/env python3
"""Dense PyTorch reference for `bench prefill`: the same checkpoint (config.json + safetensors)
run as a plain bf16 forward pass (cuBLAS GEMMs through torch.matmul, causal SDPA with GQA), one
layer at a time, timed with CUDA events; also the bf16 GEMM rate of this device, for the GEMM
floor. Prints one JSON object on its last line.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    tensors = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(model_dir, name), framework="pt", device="cuda") as f:
                for k in f.keys():
                    tensors[k] = f.get_tensor(k).to(torch.bfloat16)
    return cfg, tensors


def rms(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.to(torch.bfloat16) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(torch.bfloat16)


def forward(cfg, w, ids, mlp_chunk=32768):
    hid, hq, hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", hid // hq)
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    n = ids.shape[0]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, device="cuda", dtype=torch.float32) / d))
    ang = torch.arange(n, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(n, hq, d)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(n, hkv, d)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(n, hkv, d)
        if p + "self_attn.q_norm.weight" in w:
            q = rms(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                           v.transpose(0, 1)[None], is_causal=True,
                                           enable_gqa=True)
        o = o[0].transpose(0, 1).reshape(n, hq * d)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        del q, k, v, o, h
        for r0 in range(0, n, mlp_chunk):
            xs = x[r0:r0 + mlp_chunk]
            h = rms(xs, w[p + "post_attention_layernorm.weight"], eps)
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            xs += (F.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
            del h, g, u
    x = rms(x[-1:], w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return (x @ head.T).float()


def timed(fn, repeats=1):
    best = None
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        t = start.elapsed_time(end) / 1e3
        best = t if best is None else min(best, t)
    return best


def gemm_tflops():
    # The shapes of the model's largest GEMMs (rows x hidden x intermediate), bf16.
    a = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(12288, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b.T
    t = timed(lambda: [a @ b.T for _ in range(20)], repeats=3) / 20
    return 2 * 16384 * 4096 * 12288 / t / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    out["gemm_tflops"] = gemm_tflops()
    cfg, w = load(a.model)
    out["runs"] = []
    with torch.inference_mode():
        forward(cfg, w, torch.randint(0, cfg["vocab_size"], (2048,), device="cuda"))  # warm-up
        for n in [int(x) for x in a.tokens.split(",")]:
            ids = torch.randint(0, cfg["vocab_size"], (n,), device="cuda")
            torch.cuda.reset_peak_memory_stats()
            try:
                s = timed(lambda: forward(cfg, w, ids))
                out["runs"].append({"tokens": n, "seconds": s,
                                    "peak_bytes": torch.cuda.max_memory_allocated()})
            except torch.cuda.OutOfMemoryError as e:
                out["runs"].append({"tokens": n, "error": "out of memory: " + str(e)[:200]})
            torch.cuda.empty_cache()
            print(f"torch dense {n}: {out['runs'][-1]}", file=sys.stderr, flush=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
