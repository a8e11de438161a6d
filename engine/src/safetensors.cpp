// safetensors reading and writing. Invariants: a save validates every tensor before creating
// any file and replaces `path` only by an atomic rename of a synced temporary; a load checks
// the whole header (types, shapes, byte ranges tiling the data exactly) before reading data.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <mcd/engine/safetensors.h>

#include "dispatch.h"

namespace mcd {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swapping here");

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr const char* kMetadataKey = "__metadata__";

const char* dtype_code(DType t) {
  switch (t) {
    case DType::Float32:
      return "F32";
    case DType::Float64:
      return "F64";
    case DType::Int64:
      return "I64";
  }
  return "?";
}

std::optional<DType> dtype_from_code(const std::string& code) {
  if (code == "F32") return DType::Float32;
  if (code == "F64") return DType::Float64;
  if (code == "I64") return DType::Int64;
  return std::nullopt;
}

std::string errno_text() {
  return std::strerror(errno);
}

// Closes on scope exit; optionally removes the file it created unless released.
class FileHandle {
 public:
  FileHandle(int fd, std::string unlink_path = {})
      : fd_(fd), unlink_path_(std::move(unlink_path)) {}
  ~FileHandle() {
    if (fd_ >= 0) ::close(fd_);
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
  }
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  int fd() const { return fd_; }
  // Closes now and reports whether close succeeded (it can report a deferred write error).
  bool close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0;
  }
  void keep() { unlink_path_.clear(); }

 private:
  int fd_;
  std::string unlink_path_;
};

// write(2) may write less than asked and refuses more than about 2 GiB at once.
bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<std::size_t>(n, std::size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t n, std::uint64_t offset) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r =
        ::pread(fd, p, std::min<std::size_t>(n, std::size_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += static_cast<std::uint64_t>(r);
  }
  return true;
}

// ---- save

[[noreturn]] void save_fail(const std::string& path, const std::string& what) {
  fail("save_safetensors: '{}': {}", path, what);
}

std::string header_json(const std::string& path, const OrderedJson& header,
                        const StateDict& tensors,
                        const std::map<std::string, std::string>& metadata) {
  try {
    return header.dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const Json::exception&) {
    // Find the string that is not UTF-8 so the message can name it.
    auto valid = [](const std::string& s) {
      try {
        (void)Json(s).dump(-1, ' ', false, Json::error_handler_t::strict);
        return true;
      } catch (const Json::exception&) {
        return false;
      }
    };
    for (const auto& [key, value] : metadata)
      if (!valid(key) || !valid(value))
        save_fail(path, fmt::format("metadata entry '{}' is not valid UTF-8", key));
    for (const auto& [key, t] : tensors)
      if (!valid(key)) save_fail(path, fmt::format("tensor key '{}' is not valid UTF-8", key));
    throw;
  }
}

void sync_directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the rename itself has already happened
  (void)::fsync(fd);
  ::close(fd);
}

// ---- load

[[noreturn]] void load_fail(const std::string& path, const std::string& what) {
  fail("load_safetensors: '{}': {}", path, what);
}

struct Entry {
  std::string key;
  DType dtype;
  Shape shape;
  std::uint64_t begin, end;
};

// nlohmann keeps the last of duplicate keys silently; the parser callback sees every key.
struct DuplicateKey {
  std::size_t depth;  // 1: a tensor key, 2: a field of the entry named `owner`
  std::string owner, key;
};

Json parse_header(const std::string& path, const std::string& text) {
  struct Level {
    std::string owner;
    std::set<std::string> keys;
  };
  std::vector<Level> levels;
  std::string last_key;
  std::optional<DuplicateKey> duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        levels.push_back({last_key, {}});
        break;
      case Json::parse_event_t::object_end:
        levels.pop_back();
        break;
      case Json::parse_event_t::key: {
        last_key = parsed.get<std::string>();
        if (!levels.back().keys.insert(last_key).second && !duplicate)
          duplicate = DuplicateKey{levels.size(), levels.back().owner, last_key};
        break;
      }
      default:
        break;
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, callback);
  } catch (const Json::exception& e) {
    load_fail(path, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (duplicate) {
    if (duplicate->depth == 1)
      load_fail(path, fmt::format("duplicate tensor key '{}' in the header", duplicate->key));
    load_fail(path, fmt::format("duplicate field '{}' in header entry '{}'", duplicate->key,
                                duplicate->owner));
  }
  if (!header.is_object())
    load_fail(path, fmt::format("header must be a JSON object, got {}", header.type_name()));
  return header;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& m) {
  if (!m.is_object())
    load_fail(path, fmt::format("header field '{}' must be an object of strings, got {}",
                                kMetadataKey, m.type_name()));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : m.items()) {
    if (!value.is_string())
      load_fail(path, fmt::format("header field '{}': value of '{}' must be a string, got {}",
                                  kMetadataKey, key, value.type_name()));
    out[key] = value.get<std::string>();
  }
  return out;
}

// A JSON number that is a non-negative integer, or nothing.
std::optional<std::uint64_t> as_count(const Json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0)
    return static_cast<std::uint64_t>(v.get<std::int64_t>());
  return std::nullopt;
}

Entry parse_entry(const std::string& path, const std::string& key, const Json& v) {
  auto bad = [&](const std::string& what) {
    load_fail(path, fmt::format("tensor '{}': {}", key, what));
  };
  if (!v.is_object()) bad(fmt::format("header entry must be an object, got {}", v.type_name()));
  for (const auto& [field, value] : v.items())
    if (field != "dtype" && field != "shape" && field != "data_offsets")
      bad(fmt::format("unexpected field '{}' (expected dtype, shape, data_offsets)", field));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) bad(fmt::format("missing field '{}'", field));

  Entry e{key, DType::Float32, {}, 0, 0};
  const Json& dtype = v["dtype"];
  if (!dtype.is_string())
    bad(fmt::format("field 'dtype' must be a string, got {}", dtype.type_name()));
  const auto parsed = dtype_from_code(dtype.get<std::string>());
  if (!parsed)
    bad(fmt::format("unknown or unsupported dtype '{}' (expected F32, F64 or I64)",
                    dtype.get<std::string>()));
  e.dtype = *parsed;

  const Json& shape = v["shape"];
  if (!shape.is_array())
    bad(fmt::format("field 'shape' must be an array, got {}", shape.type_name()));
  std::uint64_t numel = 1;
  bool overflow = false;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    const auto n = as_count(shape[d]);
    if (!n || *n > static_cast<std::uint64_t>(INT64_MAX))
      bad(fmt::format("shape[{}] must be a non-negative integer, got {}", d, shape[d].dump()));
    e.shape.push_back(static_cast<std::int64_t>(*n));
    overflow = overflow || __builtin_mul_overflow(numel, *n, &numel);
  }
  std::uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(e.dtype), &nbytes);
  if (overflow) bad(fmt::format("shape {} is too large", shape_str(e.shape)));

  const Json& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !as_count(offsets[0]) || !as_count(offsets[1]))
    bad(fmt::format("field 'data_offsets' must be two non-negative integers [begin, end], got {}",
                    offsets.dump()));
  e.begin = *as_count(offsets[0]);
  e.end = *as_count(offsets[1]);
  if (e.end < e.begin)
    bad(fmt::format("data_offsets [{}, {}] end before they begin", e.begin, e.end));
  if (e.end - e.begin != nbytes)
    bad(fmt::format("data_offsets [{}, {}] span {} bytes, but dtype {} and shape {} need {}",
                    e.begin, e.end, e.end - e.begin, dtype_code(e.dtype), shape_str(e.shape),
                    nbytes));
  return e;
}

// The byte ranges must tile [0, data_size) exactly, as the safetensors spec requires.
void check_layout(const std::string& path, std::vector<Entry>& entries, std::uint64_t data_size) {
  for (const Entry& e : entries)
    if (e.end > data_size)
      load_fail(path, fmt::format("tensor '{}': data_offsets [{}, {}] run past the {} bytes of "
                                  "data after the header",
                                  e.key, e.begin, e.end, data_size));
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < pos)
      load_fail(path,
                fmt::format("tensor '{}': bytes [{}, {}) overlap tensor '{}' at [{}, {})", e.key,
                            e.begin, e.end, previous->key, previous->begin, previous->end));
    if (e.begin > pos)
      load_fail(path, fmt::format("tensor '{}': data begins at byte {}, expected {} (bytes "
                                  "[{}, {}) belong to no tensor)",
                                  e.key, e.begin, pos, pos, e.begin));
    pos = e.end;
    previous = &e;
  }
  if (pos != data_size)
    load_fail(path, fmt::format("data section is {} bytes but the tensors cover only {} (bytes "
                                "[{}, {}) belong to no tensor)",
                                data_size, pos, pos, data_size));
}

}  // namespace

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson m = OrderedJson::object();
    for (const auto& [key, value] : metadata)
      m[key] = value;
    header[kMetadataKey] = std::move(m);
  }
  std::vector<Tensor> data;
  data.reserve(tensors.size());
  std::uint64_t offset = 0;
  for (const auto& [key, t] : tensors) {
    if (key == kMetadataKey)
      save_fail(path, fmt::format("'{}' is reserved for metadata, not a tensor key", key));
    if (!t.defined()) save_fail(path, fmt::format("tensor '{}' is undefined", key));
    // Device tensors are written from a host copy, so a GPU model checkpoints as it is.
    Tensor c = detail::contiguous_data(t.device().is_cpu() ? t : t.detach().to(Device::cpu()));
    const std::uint64_t nbytes = static_cast<std::uint64_t>(c.numel()) * dtype_size(c.dtype());
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = dtype_code(c.dtype());
    entry["shape"] = c.shape();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[key] = std::move(entry);
    offset += nbytes;
    data.push_back(std::move(c));
  }
  std::string text = header_json(path, header, tensors, metadata);
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char prefix[8];
  const std::uint64_t n = text.size();
  for (int b = 0; b < 8; ++b)
    prefix[b] = static_cast<unsigned char>(n >> (8 * b));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) save_fail(path, fmt::format("cannot create '{}': {}", tmp, errno_text()));
  FileHandle file(fd, tmp);  // removes the temporary unless it is renamed into place
  bool ok = write_all(fd, prefix, sizeof prefix) && write_all(fd, text.data(), text.size());
  for (std::size_t i = 0; ok && i < data.size(); ++i)
    ok = write_all(fd, data[i].raw_data(), data[i].numel() * dtype_size(data[i].dtype()));
  if (!ok) save_fail(path, fmt::format("cannot write '{}': {}", tmp, errno_text()));
  if (::fsync(fd) != 0) save_fail(path, fmt::format("cannot sync '{}': {}", tmp, errno_text()));
  if (!file.close()) save_fail(path, fmt::format("cannot close '{}': {}", tmp, errno_text()));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    save_fail(path, fmt::format("cannot rename '{}' over it: {}", tmp, errno_text()));
  file.keep();
  sync_directory_of(path);
}

SafetensorsFile load_safetensors(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) load_fail(path, fmt::format("cannot open: {}", errno_text()));
  FileHandle file(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) load_fail(path, fmt::format("cannot stat: {}", errno_text()));
  if (!S_ISREG(st.st_mode)) load_fail(path, "not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < 8)
    load_fail(path, fmt::format("file is {} bytes, shorter than the 8-byte header length", size));

  unsigned char prefix[8];
  if (!read_all(fd, prefix, 8, 0)) load_fail(path, fmt::format("cannot read: {}", errno_text()));
  std::uint64_t n = 0;
  for (int b = 0; b < 8; ++b)
    n |= static_cast<std::uint64_t>(prefix[b]) << (8 * b);
  if (n > size - 8)
    load_fail(path, fmt::format("header length {} is larger than the {} bytes after the length "
                                "prefix",
                                n, size - 8));
  std::string text(n, '\0');
  if (!read_all(fd, text.data(), n, 8))
    load_fail(path, fmt::format("cannot read the header: {}", errno_text()));
  const Json header = parse_header(path, text);

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey)
      out.metadata = parse_metadata(path, value);
    else
      entries.push_back(parse_entry(path, key, value));
  }
  const std::uint64_t data_start = 8 + n;
  check_layout(path, entries, size - data_start);

  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (!read_all(fd, t.raw_data(), e.end - e.begin, data_start + e.begin))
      load_fail(path, fmt::format("tensor '{}': cannot read {} bytes at offset {}: {}", e.key,
                                  e.end - e.begin, data_start + e.begin, errno_text()));
    out.tensors.emplace(e.key, std::move(t));
  }
  return out;
}

}  // namespace mcd
