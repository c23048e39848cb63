// Streaming safetensors writer: worker threads fill fixed-size chunks into a small ring of
// buffers, one thread writes them in file order, so a 16 GB checkpoint needs a few MiB of memory
// and the output does not depend on thread timing.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "services/engine/model/file_util.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/checkpoint.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;
using model_internal::ErrnoStatus;

struct Chunk {
  size_t tensor;
  int64_t first;  // element index in the tensor
  int64_t count;
};

absl::Status ValidateSpecs(const std::string& path, const std::vector<TensorSpec>& tensors) {
  std::set<std::string_view> seen;
  for (const TensorSpec& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", t.name, "\" is not allowed"));
    }
    try {
      (void)nlohmann::json(t.name).dump();  // the header is JSON: names must be valid UTF-8
    } catch (const nlohmann::json::exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name \"", t.name, "\" is not valid UTF-8"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", t.name, "\" is listed twice"));
    }
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) ||
          n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", t.name, "\": invalid shape"));
      }
    }
  }
  return absl::OkStatus();
}

// The JSON header, padded with spaces so that the data section starts 8-byte aligned.
std::string BuildHeader(const std::vector<TensorSpec>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  OrderedJson h;
  OrderedJson meta;
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;  // invalid UTF-8 is replaced, never thrown
  h["__metadata__"] = std::move(meta);
  uint64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t n = t.nbytes();
    h[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = h.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// Runs `fill` over all chunks on `threads` workers and hands the filled chunks to `sink` in
// order. A ring of 2 * threads buffers bounds the memory.
absl::Status FillInOrder(const std::vector<TensorSpec>& tensors, const std::vector<Chunk>& chunks,
                         uint64_t max_chunk_bytes, int threads, const TensorFillFn& fill,
                         const std::function<absl::Status(const void*, size_t)>& sink) {
  const size_t slots = static_cast<size_t>(2 * threads);
  std::vector<std::vector<uint8_t>> ring(slots);
  std::vector<int64_t> ready(slots, -1);  // which chunk a slot holds, once filled
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0;     // next chunk to hand to a worker
  size_t written = 0;  // chunks the sink has consumed
  absl::Status error;

  auto worker = [&]() {
    for (;;) {
      size_t idx;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock,
                [&] { return !error.ok() || next >= chunks.size() || next < written + slots; });
        if (!error.ok() || next >= chunks.size()) return;
        idx = next++;
      }
      const Chunk& c = chunks[idx];
      const TensorSpec& spec = tensors[c.tensor];
      std::vector<uint8_t>& buf = ring[idx % slots];
      buf.resize(static_cast<size_t>(std::min<uint64_t>(
          max_chunk_bytes, static_cast<uint64_t>(c.count) * DTypeSize(spec.dtype))));
      absl::Status s = fill(spec, c.first, c.count, buf.data());
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok() && error.ok()) {
        error = absl::Status(s.code(), absl::StrCat("tensor \"", spec.name, "\": ", s.message()));
      }
      ready[idx % slots] = static_cast<int64_t>(idx);
      cv.notify_all();
    }
  };

  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // fewer threads than asked for still finish the job
    }
  }
  if (pool.empty()) return absl::ResourceExhaustedError("could not start any fill thread");
  for (size_t i = 0; i < chunks.size(); ++i) {
    std::vector<uint8_t>* buf = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !error.ok() || ready[i % slots] == static_cast<int64_t>(i); });
      if (!error.ok()) break;
      buf = &ring[i % slots];
    }
    absl::Status s = sink(buf->data(), buf->size());
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok()) {
      error = s;
      cv.notify_all();
      break;
    }
    ready[i % slots] = -1;
    written = i + 1;
    cv.notify_all();
  }
  for (std::thread& t : pool) t.join();
  return error;
}

// "model.safetensors" or "model-NNNNN-of-NNNNN.safetensors".
bool IsWeightFileName(std::string_view name) {
  if (name == "model.safetensors") return true;
  constexpr std::string_view kPattern = "model-#####-of-#####.safetensors";
  if (name.size() != kPattern.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const bool digit = name[i] >= '0' && name[i] <= '9';
    if (kPattern[i] == '#' ? !digit : name[i] != kPattern[i]) return false;
  }
  return true;
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                              const TensorFillFn& fill, const SafetensorsWriteOptions& options) {
  SF_RETURN_IF_ERROR(ValidateSpecs(path, tensors));
  if (!fill) return absl::InvalidArgumentError(absl::StrCat(path, ": no fill function"));
  const std::string header = BuildHeader(tensors, options.metadata);

  int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::clamp(threads, 1, 256);
  const uint64_t chunk_bytes = std::max<uint64_t>(options.chunk_bytes, 4);
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t n = tensors[i].numel();
    const int64_t per =
        static_cast<int64_t>(std::max<uint64_t>(1, chunk_bytes / DTypeSize(tensors[i].dtype)));
    for (int64_t first = 0; first < n; first += per) {
      chunks.push_back(Chunk{i, first, std::min(per, n - first)});
    }
  }

  const std::string tmp = model_internal::TempPathFor(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create", tmp);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  absl::Status s = model_internal::WriteAll(fd, len, 8, tmp);
  if (s.ok()) s = model_internal::WriteAll(fd, header.data(), header.size(), tmp);
  if (s.ok()) {
    s = FillInOrder(tensors, chunks, chunk_bytes, threads, fill, [&](const void* p, size_t n) {
      return model_internal::WriteAll(fd, p, n, tmp);
    });
    if (!s.ok()) s = absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus(errno, "fsync", tmp);
  if (::close(fd) != 0 && s.ok()) s = ErrnoStatus(errno, "close", tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus(errno, "rename", path);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) {
    specs.push_back(TensorSpec{t.name, t.dtype, t.shape});
    SF_RETURN_IF_ERROR(ValidateSpecs(path, {specs.back()}));
    if (t.data.size() != specs.back().nbytes()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", t.name, "\": has ",
                                                     t.data.size(), " bytes, its shape needs ",
                                                     specs.back().nbytes()));
    }
  }
  std::map<std::string_view, const TensorToWrite*> by_name;
  for (const TensorToWrite& t : tensors) by_name[t.name] = &t;
  auto fill = [&](const TensorSpec& spec, int64_t first, int64_t count, void* out) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) return absl::InternalError("fill asked for an unknown tensor");
    const TensorToWrite& t = *it->second;
    const size_t es = DTypeSize(spec.dtype);
    std::memcpy(out, t.data.data() + static_cast<size_t>(first) * es,
                static_cast<size_t>(count) * es);
    return absl::OkStatus();
  };
  SafetensorsWriteOptions options;
  options.threads = 1;
  return WriteSafetensors(path, specs, fill, options);
}

ShardPlan PlanShards(const std::vector<TensorSpec>& tensors, uint64_t max_shard_bytes) {
  ShardPlan plan;
  for (const TensorSpec& t : tensors) plan.total_bytes += t.nbytes();
  if (plan.total_bytes <= max_shard_bytes) {
    ShardPlan::Shard s;
    s.file_name = "model.safetensors";
    for (size_t i = 0; i < tensors.size(); ++i) s.tensors.push_back(i);
    s.data_bytes = plan.total_bytes;
    plan.shards.push_back(std::move(s));
    return plan;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].nbytes();
    if (plan.shards.empty() || (!plan.shards.back().tensors.empty() &&
                                plan.shards.back().data_bytes + n > max_shard_bytes)) {
      plan.shards.emplace_back();
    }
    plan.shards.back().tensors.push_back(i);
    plan.shards.back().data_bytes += n;
  }
  const size_t count = plan.shards.size();
  for (size_t k = 0; k < count; ++k) {
    plan.shards[k].file_name = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, count);
  }
  return plan;
}

absl::StatusOr<std::vector<std::string>> WriteCheckpointTensors(
    const std::string& dir, const std::vector<TensorSpec>& tensors, const TensorFillFn& fill,
    uint64_t max_shard_bytes, const SafetensorsWriteOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "create directory", dir);
  SF_RETURN_IF_ERROR(ValidateSpecs(dir, tensors));
  const ShardPlan plan = PlanShards(tensors, std::max<uint64_t>(max_shard_bytes, 1));
  const fs::path root(dir);
  const std::string index_path = (root / "model.safetensors.index.json").string();

  // An old index would point Open at old shards: drop it before anything else.
  if (fs::exists(index_path, ec) && !fs::remove(index_path, ec)) {
    return ErrnoStatus(ec.value(), "remove", index_path);
  }
  std::vector<std::string> written;
  std::set<std::string> ours;
  for (const ShardPlan::Shard& shard : plan.shards) {
    std::vector<TensorSpec> specs;
    for (size_t i : shard.tensors) specs.push_back(tensors[i]);
    const std::string path = (root / shard.file_name).string();
    SF_RETURN_IF_ERROR(WriteSafetensors(path, specs, fill, options));
    written.push_back(path);
    ours.insert(shard.file_name);
  }
  if (plan.sharded()) {
    nlohmann::json index;
    index["metadata"] = {{"total_size", plan.total_bytes}};
    nlohmann::json& wm = index["weight_map"];
    wm = nlohmann::json::object();
    for (const ShardPlan::Shard& shard : plan.shards) {
      for (size_t i : shard.tensors) wm[tensors[i].name] = shard.file_name;
    }
    SF_RETURN_IF_ERROR(model_internal::WriteFileAtomically(index_path, index.dump(2) + "\n"));
    written.push_back(index_path);
  }
  // Weight files of an earlier layout.
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsWeightFileName(name) && ours.count(name) == 0) stale.push_back(it->path());
  }
  if (ec) return ErrnoStatus(ec.value(), "list", dir);
  for (const fs::path& p : stale) {
    if (!fs::remove(p, ec) && ec) return ErrnoStatus(ec.value(), "remove", p.string());
  }
  return written;
}

}  // namespace sparsefill::engine
