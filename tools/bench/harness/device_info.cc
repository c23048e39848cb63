#include "tools/bench/harness/device_info.h"

#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

std::string Trim(std::string s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string ReadSmallFile(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return Trim(ss.str());
}

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

// /proc/mounts escapes blanks in paths as octal (\040).
std::string UnescapeMountPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && IsOctal(s[i + 1]) && IsOctal(s[i + 2]) &&
        IsOctal(s[i + 3])) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool PathHasPrefix(const std::string& path, const std::string& prefix) {
  if (prefix == "/") return true;
  return path.size() >= prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
         (path.size() == prefix.size() || path[prefix.size()] == '/');
}

// Fills the sysfs part (whole disk, model, rotational) from a /dev/<name> source.
void ProbeBlockDevice(StorageInfo& s) {
  if (s.source.rfind("/dev/", 0) != 0) return;
  std::error_code ec;
  fs::path dev = fs::canonical(s.source, ec);  // resolves /dev/disk/by-uuid/... and mapper links
  const std::string name = (ec ? fs::path(s.source) : dev).filename().string();
  fs::path cls = fs::path("/sys/class/block") / name;
  if (!fs::exists(cls, ec)) return;
  fs::path sys = fs::canonical(cls, ec);
  if (ec) return;
  // A partition's sysfs directory sits inside its disk's.
  if (fs::exists(sys / "partition", ec)) sys = sys.parent_path();
  s.disk = sys.filename().string();
  const std::string rot = ReadSmallFile(sys / "queue" / "rotational");
  if (!rot.empty()) s.rotational = rot == "1" ? 1 : 0;
  const std::string sectors = ReadSmallFile(sys / "size");
  if (!sectors.empty()) s.disk_bytes = std::stoull(sectors) * 512ull;
  const std::string vendor = ReadSmallFile(sys / "device" / "vendor");
  const std::string model = ReadSmallFile(sys / "device" / "model");
  if (!model.empty()) {
    s.disk_model = Trim(vendor + " " + model);
  } else {
    // virtio disks have no model, only a PCI vendor id; the driver says what kind it is.
    std::error_code ec2;
    const fs::path driver = fs::read_symlink(sys / "device" / "driver", ec2);
    s.disk_model = ec2 ? vendor : Trim(driver.filename().string() + " (vendor " + vendor + ")");
  }
}

}  // namespace

uint64_t MeminfoBytes(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  const std::string key = field + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream ls(line.substr(key.size()));
    uint64_t kib = 0;
    ls >> kib;
    return kib * 1024ull;
  }
  return 0;
}

absl::StatusOr<StorageInfo> ProbeStorage(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::canonical(dir, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("data directory '", dir, "': ", ec.message()));
  }
  StorageInfo s;
  s.path = p.string();
  std::ifstream mounts("/proc/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream ls(line);
    std::string source, mount_point, type, options;
    if (!(ls >> source >> mount_point >> type >> options)) continue;
    mount_point = UnescapeMountPath(mount_point);
    if (!PathHasPrefix(s.path, mount_point)) continue;
    if (mount_point.size() >= s.mount_point.size()) {  // later lines over-mount earlier ones
      s.mount_point = mount_point;
      s.source = UnescapeMountPath(source);
      s.filesystem = type;
      s.mount_options = options;
    }
  }
  struct statfs st {};
  if (statfs(s.path.c_str(), &st) == 0) {
    s.size_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_bsize;
    s.free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_bsize;
  }
  ProbeBlockDevice(s);
  return s;
}

absl::StatusOr<DeviceInfo> ProbeDevice(const std::string& data_dir) {
  DeviceInfo d;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) d.hostname = host;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) d.cpu_model = Trim(line.substr(colon + 1));
      break;
    }
  }
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  d.logical_cores =
      online > 0 ? static_cast<int>(online) : static_cast<int>(std::thread::hardware_concurrency());
  d.memory_bytes = MeminfoBytes("MemTotal");
  d.memory_available_bytes = MeminfoBytes("MemAvailable");
  struct utsname u {};
  if (uname(&u) == 0) d.kernel = absl::StrCat(u.sysname, " ", u.release);
  if (!data_dir.empty()) {
    SF_ASSIGN_OR_RETURN(d.storage, ProbeStorage(data_dir));
  }
  return d;
}

nlohmann::json DeviceInfo::ToJson() const {
  nlohmann::json j = {{"hostname", hostname},
                      {"cpu_model", cpu_model},
                      {"logical_cores", logical_cores},
                      {"memory_bytes", memory_bytes},
                      {"memory_available_bytes", memory_available_bytes},
                      {"kernel", kernel},
                      {"tag", Tag()}};
  if (!storage.path.empty()) {
    j["storage"] = {{"path", storage.path},
                    {"mount_point", storage.mount_point},
                    {"filesystem", storage.filesystem},
                    {"source", storage.source},
                    {"mount_options", storage.mount_options},
                    {"size_bytes", storage.size_bytes},
                    {"free_bytes", storage.free_bytes},
                    {"disk", storage.disk},
                    {"disk_model", storage.disk_model},
                    {"rotational", storage.rotational},
                    {"disk_bytes", storage.disk_bytes}};
  }
  return j;
}

std::string DeviceInfo::Tag() const {
  std::string model;
  for (char c : cpu_model) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) {
      model.push_back(static_cast<char>(std::tolower(u)));
    } else if (!model.empty() && model.back() != '-') {
      model.push_back('-');
    }
  }
  while (!model.empty() && model.back() == '-') model.pop_back();
  if (model.empty()) model = "cpu";
  // Drop marketing words so tags stay short and stable across kernel versions.
  for (const std::string w : {"-processor", "-with-radeon-graphics", "-cpu"}) {
    const size_t at = model.find(w);
    if (at != std::string::npos) model.erase(at, w.size());
  }
  if (model.size() > 32) model.resize(32);
  const uint64_t gib = (memory_bytes + (1ull << 29)) >> 30;
  return absl::StrCat(model, "-", logical_cores, "c-", gib, "g");
}

}  // namespace sparsefill::bench
