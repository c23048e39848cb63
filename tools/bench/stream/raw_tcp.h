// The loopback limit `bench stream` compares StreamCache with: a plain TCP copy of the same bytes
// over 127.0.0.1, one writer thread and one reader thread per connection, large send()/recv()
// buffers, no framing, no checksums.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace sparsefill::bench {

struct RawTcpResult {
  int connections = 0;
  uint64_t bytes = 0;      // over all connections
  double seconds = 0;      // wall clock from the first send() to the last byte received
  double cpu_seconds = 0;  // user + system of the whole process over the copy
};

// Copies `bytes_per_connection` over each of `connections` loopback connections at once
// (connections are set up before the clock starts). The reader checks that every byte arrived.
absl::StatusOr<RawTcpResult> RunRawTcpCopy(int connections, uint64_t bytes_per_connection,
                                           size_t buffer_bytes);

// The disk-tier twin: each connection's sender read()s the file at `path` from start to end
// (the caller evicts it from the page cache first) and send()s every piece, so the copy pays for
// the same disk reads a disk-tier StreamCache does. Every connection copies the whole file.
absl::StatusOr<RawTcpResult> RunRawTcpFileCopy(int connections, const std::string& path,
                                               size_t buffer_bytes);

// User + system CPU seconds of this process so far (getrusage).
double ProcessCpuSeconds();

}  // namespace sparsefill::bench
