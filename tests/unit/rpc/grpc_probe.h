// Calls grpc.health.v1 and server reflection without their generated stubs (Debian ships none):
// requests are hand-encoded protobuf bytes, replies are read with protobuf's UnknownFieldSet.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/channel.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

namespace sparsefill::rpc::test_support {

inline std::string BufferBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// grpc.health.v1.Health/Check for `service` ("" = the server). Returns the serving status
// number (1 SERVING, 2 NOT_SERVING) or -1 with `status` set when the call failed.
inline int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                       grpc::Status* status) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::string request;  // HealthCheckRequest { string service = 1; }
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1);
  grpc::ByteBuffer resp;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req, &resp,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  *status = done.get_future().get();
  if (!status->ok()) return -1;
  google::protobuf::UnknownFieldSet fields;  // HealthCheckResponse { ServingStatus status = 1; }
  const std::string bytes = BufferBytes(resp);
  if (!fields.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return -1;
  for (int i = 0; i < fields.field_count(); ++i) {
    if (fields.field(i).number() == 1) return static_cast<int>(fields.field(i).varint());
  }
  return 0;  // proto3 default: UNKNOWN
}

// ServerReflectionInfo with list_services; the names of the services the server lists.
inline std::vector<std::string> ReflectionServices(const std::shared_ptr<grpc::Channel>& channel,
                                                   grpc::Status* status) {
  std::vector<std::string> names;
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto await = [&]() {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = await();
  // ServerReflectionRequest { string list_services = 7; }
  const std::string request = {0x3a, 0x00};
  grpc::Slice slice(request);
  grpc::ByteBuffer req(&slice, 1);
  grpc::ByteBuffer resp;
  if (ok) {
    call->Write(req, reinterpret_cast<void*>(2));
    ok = await();
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    ok = await();
  }
  if (ok) {
    call->Read(&resp, reinterpret_cast<void*>(4));
    ok = await();
  }
  call->Finish(status, reinterpret_cast<void*>(5));
  await();
  cq.Shutdown();
  void* tag;
  bool ignored;
  while (cq.Next(&tag, &ignored)) {
  }
  if (!ok) return names;
  // ServerReflectionResponse { ListServiceResponse list_services_response = 6; }
  // ListServiceResponse { repeated ServiceResponse service = 1; } ServiceResponse { name = 1 }
  google::protobuf::UnknownFieldSet top;
  const std::string bytes = BufferBytes(resp);
  if (!top.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return names;
  for (int i = 0; i < top.field_count(); ++i) {
    if (top.field(i).number() != 6) continue;
    google::protobuf::UnknownFieldSet list;
    const std::string& lb = top.field(i).length_delimited();
    if (!list.ParseFromArray(lb.data(), static_cast<int>(lb.size()))) continue;
    for (int j = 0; j < list.field_count(); ++j) {
      if (list.field(j).number() != 1) continue;
      google::protobuf::UnknownFieldSet service;
      const std::string& sb = list.field(j).length_delimited();
      if (!service.ParseFromArray(sb.data(), static_cast<int>(sb.size()))) continue;
      for (int k = 0; k < service.field_count(); ++k) {
        if (service.field(k).number() == 1) names.push_back(service.field(k).length_delimited());
      }
    }
  }
  return names;
}

}  // namespace sparsefill::rpc::test_support
