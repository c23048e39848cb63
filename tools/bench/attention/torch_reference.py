#!/usr/bin/env python3
"""The torch side of `bench attention`: SDPA dense causal and FlexAttention with our blocks.

Launched by the C++ subcommand in the same run on the same GPU. It reads DIR/meta.json, the
bf16 Q/K/V the C++ side generated ([tokens, heads, head_dim], raw little-endian; shorter runs use
prefixes) and, per (length, config), the tile-level block lists in CSR form (per KV head and tile
of q_tile queries, the sorted union of the blocks those queries selected, in units of kv_block
tokens). It writes DIR/torch.json: milliseconds of every repeat, or the error, per measurement.
"""
import argparse
import json
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F


def load_bf16(path, shape):
    raw = np.fromfile(path, dtype=np.int16)
    return torch.from_numpy(raw).view(torch.bfloat16).reshape(shape)


def time_cuda(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        out.append(start.elapsed_time(stop))
    return out


def heads_first(x, n):
    # [tokens, heads, d] -> [1, heads, n, d], contiguous (what SDPA and Flex are fastest on).
    return x[:n].transpose(0, 1).unsqueeze(0).contiguous()


def pack_rows(rows, blocks, num_rows, width):
    """Per row, its entries (already ascending) left-aligned in a [num_rows, width] array."""
    counts = np.bincount(rows, minlength=num_rows).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(rows)) - starts[rows]
    idx = np.zeros((num_rows, width), dtype=np.int32)
    idx[rows, pos] = blocks
    return counts, idx


def block_mask_from_csr(run, meta, device):
    from torch.nn.attention.flex_attention import BlockMask

    n = run["tokens"]
    q_tile, kv_block = run["q_tile"], run["kv_block"]
    kv_heads, group = meta["kv_heads"], meta["q_heads"] // meta["kv_heads"]
    tiles = run["num_tiles"]
    offsets = np.fromfile(run["offsets"], dtype=np.int64)
    blocks = np.fromfile(run["blocks"], dtype=np.int32).astype(np.int64)
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(kv_heads * tiles), counts)
    tile = rows % tiles
    # A block is full when its last key is at or before the tile's first query; the others
    # (the diagonal) get the causal mask_mod.
    full = (blocks + 1) * kv_block - 1 <= tile * q_tile
    width = (n + kv_block - 1) // kv_block
    f_cnt, f_idx = pack_rows(rows[full], blocks[full], kv_heads * tiles, width)
    p_cnt, p_idx = pack_rows(rows[~full], blocks[~full], kv_heads * tiles, width)

    def to_dev(a, shape):
        t = torch.from_numpy(a).reshape(shape).to(device)
        return t.repeat_interleave(group, dim=1)  # per query head

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    return BlockMask.from_kv_blocks(
        to_dev(p_cnt, (1, kv_heads, tiles)),
        to_dev(p_idx, (1, kv_heads, tiles, width)),
        to_dev(f_cnt, (1, kv_heads, tiles)),
        to_dev(f_idx, (1, kv_heads, tiles, width)),
        BLOCK_SIZE=(q_tile, kv_block),
        mask_mod=causal,
        seq_lengths=(n, n),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    with open(f"{args.dir}/meta.json") as f:
        meta = json.load(f)
    dev = torch.device("cuda")
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "sdpa": {},
        "flex": {},
        "notes": [],
    }
    t0 = time.time()
    nmax, d = meta["max_tokens"], meta["head_dim"]
    hq, hkv = meta["q_heads"], meta["kv_heads"]
    q_all = load_bf16(meta["q_file"], (nmax, hq, d)).to(dev)
    k_all = load_bf16(meta["k_file"], (nmax, hkv, d)).to(dev)
    v_all = load_bf16(meta["v_file"], (nmax, hkv, d)).to(dev)
    print(f"torch_reference: inputs loaded in {time.time() - t0:.1f} s", flush=True)
    warmup, repeats = meta["warmup"], meta["repeats"]
    group = hq // hkv

    for n in meta["dense"]:
        key = str(n)
        try:
            q, k, v = heads_first(q_all, n), heads_first(k_all, n), heads_first(v_all, n)
            # K/V expanded to every query head: the plain MHA flash path, SDPA's fastest.
            ke = k.repeat_interleave(group, dim=1)
            ve = v.repeat_interleave(group, dim=1)
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                              SDPBackend.EFFICIENT_ATTENTION]):
                ms = time_cuda(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True),
                               warmup, repeats)
            result["sdpa"][key] = {"ms": ms}
            del ke, ve
        except Exception as e:  # reported, not fatal: the other measurements still count
            result["sdpa"][key] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        print(f"torch_reference: sdpa {n}: {result['sdpa'][key]}", flush=True)

    try:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as e:
        flex = None
        result["notes"].append(f"FlexAttention unavailable: {e}")
    for run in meta["flex"]:
        key = run["key"]
        if flex is None:
            result["flex"][key] = {"error": "FlexAttention unavailable"}
            continue
        try:
            n = run["tokens"]
            q, k, v = heads_first(q_all, n), heads_first(k_all, n), heads_first(v_all, n)
            bm = block_mask_from_csr(run, meta, dev)
            err = None
            for opts in ({"BLOCK_M": 128, "BLOCK_N": 64}, None):
                try:
                    fn = lambda: flex(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts)
                    ms = time_cuda(fn, warmup, repeats)
                    result["flex"][key] = {"ms": ms, "kernel_options": opts}
                    err = None
                    break
                except Exception as e:
                    err = f"{type(e).__name__}: {str(e)[:400]}"
            if err is not None:
                result["flex"][key] = {"error": err}
            del bm
        except Exception as e:
            result["flex"][key] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            traceback.print_exc()
        print(f"torch_reference: flex {key}: {result['flex'][key]}", flush=True)

    result["seconds"] = time.time() - t0
    with open(f"{args.dir}/torch.json", "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
