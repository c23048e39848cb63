#!/usr/bin/env bash
# DESIGN §2: gRPC, protobuf and RocksDB headers appear only in their owning folders; nothing in
# kernels/, services/engine/ or the public kernel/engine headers includes them.
set -euo pipefail
cd "${1:-.}"
bad=$(grep -rlE '#include *[<"](grpcpp|grpc\+\+|grpc/|google/protobuf|rocksdb)/' \
  kernels services/engine include/sparsefill/kernels include/sparsefill/engine \
  include/sparsefill/common include/sparsefill/kvstore include/sparsefill/client 2>/dev/null || true)
if [[ -n "$bad" ]]; then
  echo "transport/storage headers outside their owners:"; echo "$bad"; exit 1
fi
# RocksDB only under services/kvstore/rocksdb.
bad=$(grep -rlE '#include *[<"]rocksdb/' --include='*.h' --include='*.cc' --include='*.cu' . 2>/dev/null \
  | grep -vE '^\./(services/kvstore/rocksdb|build[^/]*)/' || true)
if [[ -n "$bad" ]]; then echo "RocksDB included outside services/kvstore/rocksdb:"; echo "$bad"; exit 1; fi
# gRPC/protobuf only in the folders that own a transport.
bad=$(grep -rlE '#include *[<"](grpcpp|grpc\+\+|grpc/|google/protobuf)/|\.pb\.h"' \
  --include='*.h' --include='*.cc' kernels services include tools 2>/dev/null \
  | grep -vE '^(services/(rpc|client|worker|coordinator|metrics)/|services/common/auth|tools/(decode-sink|bench|sparsefill)/)' || true)
if [[ -n "$bad" ]]; then echo "gRPC/protobuf outside their owners:"; echo "$bad"; exit 1; fi
# The coordinator never depends on the engine (DESIGN §2).
bad=$(grep -rlE '#include *"sparsefill/engine/' services/coordinator 2>/dev/null || true)
if [[ -n "$bad" ]]; then echo "the coordinator includes the engine:"; echo "$bad"; exit 1; fi
echo "layering ok"
