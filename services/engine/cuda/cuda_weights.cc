#include "services/engine/cuda/cuda_weights.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cuda {
namespace {

// Uploads tensors through one pinned staging buffer, converting to bf16 on the way.
class Uploader {
 public:
  static absl::StatusOr<Uploader> Create() {
    Uploader u;
    SF_ASSIGN_OR_RETURN(u.staging_, PinnedBuffer::Allocate(kStagingBytes, "weight staging"));
    return u;
  }

  // Appends tensor `name` (numel elements expected) at byte `offset` of `dst`.
  absl::Status Put(const Checkpoint& ckpt, const std::string& name, int64_t expected_numel,
                   const DeviceBuffer& dst, size_t offset) {
    SF_ASSIGN_OR_RETURN(TensorView t, ckpt.Tensor(name));
    if (t.numel() != expected_numel) {
      return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor ", name, " has ", t.numel(),
                                                     " elements, the config implies ",
                                                     expected_numel));
    }
    if (offset + size_t(expected_numel) * 2 > dst.bytes()) {
      return absl::InternalError(absl::StrCat("upload of ", name, ": destination too small"));
    }
    const size_t per_chunk = kStagingBytes / sizeof(float);  // elements per round
    std::vector<float> f32;
    for (size_t first = 0; first < size_t(expected_numel); first += per_chunk) {
      const size_t n = std::min(per_chunk, size_t(expected_numel) - first);
      uint16_t* out = staging_.as<uint16_t>();
      const char* src = static_cast<const char*>(t.data) + first * DTypeSize(t.dtype);
      if (t.dtype == DType::kBF16) {
        std::memcpy(out, src, n * 2);
      } else {
        f32.resize(n);
        ConvertToF32(src, t.dtype, f32.data(), n);
        ConvertFromF32(f32.data(), DType::kBF16, out, n);
      }
      SF_CUDA_RETURN_IF_ERROR(cudaMemcpy(static_cast<char*>(dst.get()) + offset + first * 2, out,
                                         n * 2, cudaMemcpyHostToDevice),
                              absl::StrCat("upload of ", name));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<DeviceBuffer> Load(const Checkpoint& ckpt, const std::string& name, int64_t numel,
                                    size_t* total) {
    SF_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(size_t(numel) * 2, name));
    SF_RETURN_IF_ERROR(Put(ckpt, name, numel, b, 0));
    *total += b.bytes();
    return b;
  }

 private:
  static constexpr size_t kStagingBytes = size_t{64} << 20;
  PinnedBuffer staging_;
};

}  // namespace

absl::StatusOr<DeviceWeights> UploadWeights(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  const int64_t h = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int64_t qd = int64_t{c.num_heads} * d, kvd = int64_t{c.num_kv_heads} * d;
  SF_ASSIGN_OR_RETURN(Uploader up, Uploader::Create());
  DeviceWeights w;
  size_t* total = &w.bytes;
  SF_ASSIGN_OR_RETURN(w.embed,
                      up.Load(checkpoint, TensorNames::Embedding(), c.vocab_size * h, total));
  SF_ASSIGN_OR_RETURN(w.final_norm, up.Load(checkpoint, TensorNames::FinalNorm(), h, total));
  if (!c.tie_word_embeddings) {
    SF_ASSIGN_OR_RETURN(w.lm_head,
                        up.Load(checkpoint, TensorNames::LmHead(), c.vocab_size * h, total));
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    DeviceLayerWeights& l = w.layers[static_cast<size_t>(i)];
    auto name = [i](std::string_view s) { return TensorNames::Layer(i, s); };
    SF_ASSIGN_OR_RETURN(l.input_norm,
                        up.Load(checkpoint, name("input_layernorm.weight"), h, total));
    SF_ASSIGN_OR_RETURN(l.post_norm,
                        up.Load(checkpoint, name("post_attention_layernorm.weight"), h, total));
    SF_ASSIGN_OR_RETURN(l.wq, up.Load(checkpoint, name("self_attn.q_proj.weight"), qd * h, total));
    SF_ASSIGN_OR_RETURN(l.wk, up.Load(checkpoint, name("self_attn.k_proj.weight"), kvd * h, total));
    SF_ASSIGN_OR_RETURN(l.wv, up.Load(checkpoint, name("self_attn.v_proj.weight"), kvd * h, total));
    SF_ASSIGN_OR_RETURN(l.wo, up.Load(checkpoint, name("self_attn.o_proj.weight"), h * qd, total));
    if (c.attention_bias) {
      SF_ASSIGN_OR_RETURN(l.bq, up.Load(checkpoint, name("self_attn.q_proj.bias"), qd, total));
      SF_ASSIGN_OR_RETURN(l.bk, up.Load(checkpoint, name("self_attn.k_proj.bias"), kvd, total));
      SF_ASSIGN_OR_RETURN(l.bv, up.Load(checkpoint, name("self_attn.v_proj.bias"), kvd, total));
    }
    if (c.qk_norm) {
      SF_ASSIGN_OR_RETURN(l.q_norm, up.Load(checkpoint, name("self_attn.q_norm.weight"), d, total));
      SF_ASSIGN_OR_RETURN(l.k_norm, up.Load(checkpoint, name("self_attn.k_norm.weight"), d, total));
    }
    SF_ASSIGN_OR_RETURN(l.w_gate_up,
                        DeviceBuffer::Allocate(size_t(2 * inter * h) * 2, name("mlp.gate_up")));
    SF_RETURN_IF_ERROR(up.Put(checkpoint, name("mlp.gate_proj.weight"), inter * h, l.w_gate_up, 0));
    SF_RETURN_IF_ERROR(up.Put(checkpoint, name("mlp.up_proj.weight"), inter * h, l.w_gate_up,
                              size_t(inter * h) * 2));
    *total += l.w_gate_up.bytes();
    SF_ASSIGN_OR_RETURN(l.w_down,
                        up.Load(checkpoint, name("mlp.down_proj.weight"), h * inter, total));
  }
  return w;
}

}  // namespace sparsefill::engine::cuda
