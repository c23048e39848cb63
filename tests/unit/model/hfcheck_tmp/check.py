import json, sys, traceback
import torch, transformers
from transformers import AutoModelForCausalLM, LlamaConfig
from safetensors.torch import load_file
root = sys.argv[1]
rope = json.load(open(root + "/rope.json"))
print("transformers", transformers.__version__, "torch", torch.__version__)
def cmp(tag, ours, theirs):
    ours = torch.tensor(ours, dtype=torch.float64); theirs = theirs.double().flatten()
    rel = ((ours - theirs).abs() / theirs.abs()).max().item()
    print(f"  {tag}: max rel diff {rel:.3e}", "OK" if rel < 2e-6 else "MISMATCH", ours[:3].tolist(), theirs[:3].tolist())
for name in ["tiny", "qwen3-8b", "llama3-8b", "qwen2"]:
    d = f"{root}/{name}"
    try:
        model, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True, dtype=torch.float32)
        print(name, type(model).__name__, "loading info:", {k: v for k, v in info.items() if v})
        sd = load_file(d + "/model.safetensors")
        msd = model.state_dict()
        bad = [k for k, v in sd.items() if k not in msd or not torch.equal(msd[k], v)]
        print("  tensors", len(sd), "mismatched:", bad, "tied:", model.config.tie_word_embeddings)
        re = model.model.rotary_emb
        cmp("inv_freq(100)", rope[name]["100"]["inv_freq"], re.inv_freq)
        print("  attention_scaling", re.attention_scaling, "ours", rope[name]["100"]["att"])
        with torch.no_grad():
            out = model(torch.tensor([[1, 2, 3, 4]])).logits
        print("  forward ok", tuple(out.shape), float(out.abs().mean()))
    except Exception:
        traceback.print_exc()
# LongRoPE (MiniCPM4 style) through transformers' own initialiser.
try:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cfg = json.load(open(f"{root}/minicpm4-8b/config.json"))
    cfg["architectures"] = ["LlamaForCausalLM"]; cfg["model_type"] = "llama"
    lc = LlamaConfig(**cfg)
    fn = ROPE_INIT_FUNCTIONS["longrope"]
    for n in ["100", "32768", "40000"]:
        inv, att = fn(lc, "cpu", int(n))
        cmp(f"longrope inv_freq({n})", rope["minicpm4-8b"][n]["inv_freq"], inv)
        print("   attention factor", att, "ours", rope["minicpm4-8b"][n]["att"])
except Exception:
    traceback.print_exc()
