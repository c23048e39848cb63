// Fuzzes the safetensors header parser (services/engine/model/safetensors_format.*), which reads
// the first bytes of every checkpoint file a user points the server at.
//
// Input: byte 0 selects the form.
//   even: the rest is a whole file (length prefix, header, data) as it would lie on disk.
//   odd:  bytes 1-2 are a data-section length L (little-endian, < 64 KiB; larger ones make
//         every execution slow), byte 3 is ignored, and the rest is the
//         header JSON; the fuzzer writes the 8-byte length itself and appends L zero bytes, so
//         mutations explore the header's meaning rather than its length field.
// Invariants of a parse that succeeds: the layout adds up to the file, every tensor lies inside
// the data section with exactly its shape's bytes (the fuzzer reads its first and last byte, so
// ASan sees any claim past the end), names are unique and sorted, no two non-empty tensors overlap.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "services/engine/model/safetensors_format.h"
#include "sparsefill/common/dtype.h"
#include "tests/fuzz/fuzz_check.h"

using sparsefill::DTypeSize;
using sparsefill::engine::model_internal::ParseSafetensors;
using sparsefill::engine::model_internal::SafetensorsEntry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<uint8_t> built;
  const uint8_t* file = data + 1;
  uint64_t file_size = size - 1;
  if ((data[0] & 1) != 0) {
    if (size < 4) return 0;
    const uint64_t data_len = data[1] | (uint64_t{data[2]} << 8);  // + byte 3 reserved
    const uint64_t n = size - 4;
    built.resize(8 + n + data_len);
    for (int i = 0; i < 8; ++i) built[i] = static_cast<uint8_t>(n >> (8 * i));
    std::memcpy(built.data() + 8, data + 4, n);
    file = built.data();
    file_size = built.size();
  } else if (file_size > 0) {
    // An exact-size copy, so reading one byte past the file is an ASan report.
    built.assign(file, file + file_size);
    file = built.data();
  }

  auto layout = ParseSafetensors(file, file_size, "fuzz.safetensors");
  if (!layout.ok()) {
    SF_FUZZ_CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument, "code %d: %s",
                  static_cast<int>(layout.status().code()),
                  std::string(layout.status().message()).c_str());
    SF_FUZZ_CHECK(!layout.status().message().empty(), "error without a message");
    return 0;
  }
  const auto& l = *layout;
  SF_FUZZ_CHECK(l.data_offset == 8 + l.header_bytes, "data_offset %llu header %llu",
                (unsigned long long)l.data_offset, (unsigned long long)l.header_bytes);
  SF_FUZZ_CHECK(l.data_offset <= file_size, "data_offset past the file");
  SF_FUZZ_CHECK(l.data_bytes == file_size - l.data_offset, "data_bytes do not add up");
  uint64_t checksum = 0;
  std::vector<const SafetensorsEntry*> by_begin;
  for (size_t i = 0; i < l.tensors.size(); ++i) {
    const SafetensorsEntry& e = l.tensors[i];
    SF_FUZZ_CHECK(e.name != "__metadata__", "metadata parsed as a tensor");
    if (i > 0) SF_FUZZ_CHECK(l.tensors[i - 1].name < e.name, "names not sorted/unique");
    SF_FUZZ_CHECK(e.begin <= e.end && e.end <= l.data_bytes, "tensor %s [%llu, %llu) outside %llu",
                  e.name.c_str(), (unsigned long long)e.begin, (unsigned long long)e.end,
                  (unsigned long long)l.data_bytes);
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      SF_FUZZ_CHECK(d >= 0, "negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    SF_FUZZ_CHECK(numel * DTypeSize(e.dtype) == e.end - e.begin, "tensor %s: size mismatch",
                  e.name.c_str());
    // The first and last byte the layout promises: the file is one exact-size buffer, so a
    // claim past its end is an ASan report here.
    if (e.end > e.begin) {
      checksum += file[l.data_offset + e.begin] + file[l.data_offset + e.end - 1];
      by_begin.push_back(&e);
    }
  }
  std::sort(by_begin.begin(), by_begin.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    SF_FUZZ_CHECK(by_begin[i]->begin >= by_begin[i - 1]->end, "tensors %s and %s overlap",
                  by_begin[i - 1]->name.c_str(), by_begin[i]->name.c_str());
  }
  volatile uint64_t sink = checksum;
  (void)sink;
  return 0;
}
