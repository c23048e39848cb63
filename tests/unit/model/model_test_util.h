// Helpers for the checkpoint tests: small configs, random checkpoints, hand-made safetensors.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine::testing {

// A Qwen3 config small enough to write in milliseconds.
inline ModelConfig SmallConfig(Architecture arch = Architecture::kQwen3,
                               DType dtype = DType::kBF16) {
  ModelConfig c;
  c.arch = arch;
  c.model_type = std::string(ArchitectureModelType(arch));
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 4096;
  c.rope_theta = 10000.0;
  c.qk_norm = arch == Architecture::kQwen3;
  c.attention_bias = arch == Architecture::kQwen2;
  c.tie_word_embeddings = false;
  c.dtype = dtype;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

// Random bytes in `dtype` for a tensor (finite values from N(0, 1)).
inline std::vector<uint8_t> RandomTensorBytes(const TensorSpec& spec, Rng& rng) {
  const size_t n = static_cast<size_t>(spec.numel());
  std::vector<float> f(n);
  for (float& x : f) x = rng.Normal();
  std::vector<uint8_t> out(n * DTypeSize(spec.dtype));
  ConvertFromF32(f.data(), spec.dtype, out.data(), n);
  return out;
}

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  ASSERT_TRUE(f.good()) << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A safetensors file built by hand: 8-byte length (or `length_override`), header, data.
inline std::string RawSafetensors(const std::string& header, size_t data_bytes,
                                  int64_t length_override = -1) {
  const uint64_t n = length_override >= 0 ? static_cast<uint64_t>(length_override) : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  out += header;
  out.append(data_bytes, '\x11');
  return out;
}

// Writes config.json and a complete random checkpoint of `config` into `dir`; returns the
// tensors written (in memory, to compare against).
inline std::vector<TensorToWrite> WriteRandomCheckpoint(const std::string& dir,
                                                        const ModelConfig& config, Rng& rng) {
  std::vector<TensorToWrite> tensors;
  for (const TensorSpec& s : ExpectedTensors(config)) {
    tensors.push_back(TensorToWrite{s.name, s.dtype, s.shape, RandomTensorBytes(s, rng)});
  }
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  WriteText(dir + "/config.json", ModelConfigToJson(config));
  return tensors;
}

}  // namespace sparsefill::engine::testing
