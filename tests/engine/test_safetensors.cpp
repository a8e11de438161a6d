// safetensors: round trips of every dtype and rank, the exact byte layout of a small file,
// every kind of corrupt file (each error names the path, and the key where there is one),
// and saves that fail without touching an existing file or leaving a temporary behind.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>

using namespace mcd;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed on exit.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() / ("mcd_test_safetensors_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(++counter));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int b = 0; b < 8; ++b)
    s[b] = static_cast<char>((v >> (8 * b)) & 0xff);
  return s;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// A file with the given header text (padded to 8) and data bytes.
std::string file_bytes(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.numel() * dtype_size(ca.dtype())) == 0;
}

// Loading `path` fails with a message containing the path and every one of `parts`.
void expect_load_error(const std::string& path, const std::vector<std::string>& parts) {
  try {
    (void)load_safetensors(path);
    FAIL("load_safetensors accepted " << path);
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(msg.find(path) != std::string::npos);
    for (const std::string& p : parts) {
      INFO("expected to contain: " << p);
      CHECK(msg.find(p) != std::string::npos);
    }
  }
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype and rank, with metadata", "[safetensors]") {
  TempDir dir;
  Generator gen(21);
  StateDict in;
  in["f32.matrix"] = Tensor::randn({2, 3}, gen, DType::Float32);
  in["f64.rank3"] = Tensor::randn({2, 1, 4}, gen, DType::Float64);
  in["i64.vector"] = Tensor::from_vector<std::int64_t>(
      {0, -1, std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()},
      {4});
  in["scalar"] = Tensor::scalar(2.5, DType::Float64);
  in["empty"] = Tensor::zeros({0, 3}, DType::Float32);
  in["layer1.0.conv1.weight"] = Tensor::randn({3, 2, 3, 3}, gen, DType::Float32);
  // A non-contiguous view is written as its contiguous values.
  Tensor base = Tensor::randn({3, 5}, gen, DType::Float64);
  in["transposed"] = base.transpose(0, 1).slice(0, 1, 5, 2);
  REQUIRE_FALSE(in["transposed"].is_contiguous());
  const std::map<std::string, std::string> meta{
      {"format", "pt"}, {"epoch", "12"}, {"note", "na\xc3\xafve \"quoted\" \\ text"}};

  const std::string path = dir.file("model.safetensors");
  save_safetensors(path, in, meta);
  const SafetensorsFile out = load_safetensors(path);
  CHECK(out.metadata == meta);
  REQUIRE(out.tensors.size() == in.size());
  for (const auto& [key, t] : in) {
    INFO(key);
    REQUIRE(out.tensors.count(key));
    CHECK(same_tensor(out.tensors.at(key), t));
    CHECK(out.tensors.at(key).is_contiguous());
  }
  CHECK(out.tensors.at("scalar").shape().empty());
  CHECK(out.tensors.at("scalar").item() == 2.5);
  CHECK(out.tensors.at("empty").shape() == Shape{0, 3});
  CHECK_FALSE(fs::exists(path + ".tmp"));

  // Without metadata the header has no "__metadata__" and loads back empty.
  save_safetensors(path, {{"x", Tensor::ones({2})}});
  CHECK(read_bytes(path).find("__metadata__") == std::string::npos);
  const SafetensorsFile again = load_safetensors(path);
  CHECK(again.metadata.empty());
  CHECK(again.tensors.size() == 1);

  // An empty dict is a valid file too.
  save_safetensors(path, {});
  CHECK(load_safetensors(path).tensors.empty());
}

TEST_CASE("safetensors byte layout is exactly the spec's", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  StateDict t;
  t["a"] = Tensor::from_vector<float>({1.0f, -2.5f}, {2});
  t["b"] = Tensor::from_vector<std::int64_t>({7}, {});
  t["c"] = Tensor::from_vector<double>({0.25, 1e300, -3.0, 4.0}, {2, 1, 2});
  save_safetensors(path, t, {{"k", "v"}});

  const std::string json = R"({"__metadata__":{"k":"v"},)"
                           R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},)"
                           R"("c":{"dtype":"F64","shape":[2,1,2],"data_offsets":[16,48]}})";
  std::string header = json;
  while (header.size() % 8 != 0)
    header += ' ';
  REQUIRE(header.size() > json.size());  // this case does exercise the padding
  const std::string expected = le64(header.size()) + header + raw<float>({1.0f, -2.5f}) +
                               raw<std::int64_t>({7}) + raw<double>({0.25, 1e300, -3.0, 4.0});
  const std::string actual = read_bytes(path);
  CHECK(actual.size() == expected.size());
  CHECK(actual.substr(0, 8) == le64(header.size()));
  CHECK(actual.substr(8, header.size()) == header);
  CHECK(actual == expected);
}

TEST_CASE("safetensors loads files from another writer, in any data order", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("other.safetensors");
  // Keys out of data order, extra whitespace, no metadata, header padded with spaces.
  const std::string header = R"({ "z": {"shape": [2], "dtype": "F64", "data_offsets": [0, 16]},)"
                             R"( "a": {"data_offsets": [16, 20], "dtype": "F32", "shape": [1]} })";
  write_bytes(path, file_bytes(header, raw<double>({1.5, -2.0}) + raw<float>({3.0f})));
  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.tensors.at("z").to_doubles() == std::vector<double>{1.5, -2.0});
  CHECK(f.tensors.at("a").to_doubles() == std::vector<double>{3.0});
  CHECK(f.tensors.at("a").dtype() == DType::Float32);
}

TEST_CASE("safetensors rejects corrupt files with precise messages", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const std::string w12 = R"("w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]})";
  auto check = [&](const std::string& bytes, const std::vector<std::string>& parts) {
    write_bytes(path, bytes);
    expect_load_error(path, parts);
    CHECK(read_bytes(path) == bytes);  // a failed load leaves the file as it was
  };
  const std::string data12 = raw<float>({1, 2, 3});

  SECTION("missing file") {
    expect_load_error(dir.file("none.safetensors"), {"cannot open"});
  }
  SECTION("shorter than 8 bytes") {
    check("abc", {"3 bytes", "8-byte"});
  }
  SECTION("empty file") {
    check("", {"0 bytes"});
  }
  SECTION("header length past the end") {
    check(le64(1000) + "{}      ", {"header length 1000", "8 bytes"});
  }
  SECTION("header length near 2^64") {
    check(le64(~std::uint64_t{0}) + "{}", {"header length"});
  }
  SECTION("not JSON") {
    check(file_bytes("{\"w\": [1, 2", ""), {"not valid JSON"});
  }
  SECTION("trailing garbage after the JSON") {
    check(file_bytes("{} x", ""), {"not valid JSON"});
  }
  SECTION("header not an object") {
    check(file_bytes("[1, 2]", ""), {"JSON object", "array"});
  }
  SECTION("entry not an object") {
    check(file_bytes(R"({"w": 3})", ""), {"'w'", "object"});
  }
  SECTION("unknown dtype") {
    check(file_bytes(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", "abcd"),
          {"'w'", "'F16'", "F32, F64 or I64"});
  }
  SECTION("dtype not a string") {
    check(file_bytes(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,4]}})", "abcd"),
          {"'w'", "'dtype'", "string"});
  }
  SECTION("missing field") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[3]}})", data12),
          {"'w'", "missing field 'data_offsets'"});
  }
  SECTION("unexpected field") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12],"x":1}})", data12),
          {"'w'", "unexpected field 'x'"});
  }
  SECTION("negative dimension") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", data12),
          {"'w'", "shape[0]", "-3"});
  }
  SECTION("fractional dimension") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,12]}})", data12),
          {"'w'", "shape[0]"});
  }
  SECTION("shape too large") {
    check(file_bytes(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],)"
                     R"("data_offsets":[0,12]}})",
                     data12),
          {"'w'", "too large"});
  }
  SECTION("shape and offsets disagree") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", data12),
          {"'w'", "[0, 12]", "span 12 bytes", "need 16"});
  }
  SECTION("offsets reversed") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[12,0]}})", data12),
          {"'w'", "end before"});
  }
  SECTION("offsets malformed") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0]}})", data12),
          {"'w'", "data_offsets", "[begin, end]"});
  }
  SECTION("offsets out of bounds") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data12),
          {"'w'", "past the 12 bytes"});
  }
  SECTION("overlapping tensors") {
    check(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     data12),
          {"'b'", "overlap", "'a'"});
  }
  SECTION("gap between tensors") {
    check(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                     data12),
          {"'b'", "begins at byte 8", "expected 4"});
  }
  SECTION("data before the first tensor") {
    check(file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data12),
          {"'w'", "begins at byte 4", "expected 0"});
  }
  SECTION("trailing data") {
    check(file_bytes("{" + w12 + "}", data12 + "xxxx"), {"[12, 16)", "no tensor"});
  }
  SECTION("duplicate tensor key") {
    check(file_bytes("{" + w12 + "," + w12 + "}", data12), {"duplicate tensor key 'w'"});
  }
  SECTION("duplicate field in an entry") {
    check(file_bytes(R"({"w":{"dtype":"F32","dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
                     data12),
          {"duplicate field 'dtype'", "'w'"});
  }
  SECTION("metadata value not a string") {
    check(file_bytes(R"({"__metadata__":{"epoch":3},)" + w12 + "}", data12),
          {"'__metadata__'", "'epoch'", "string"});
  }
  SECTION("metadata not an object") {
    check(file_bytes(R"({"__metadata__":"x",)" + w12 + "}", data12), {"'__metadata__'"});
  }
  SECTION("a directory") {
    expect_load_error(dir.file(""), {"not a regular file"});
  }
}

TEST_CASE("a failed save leaves existing files alone and no temporary", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"w", Tensor::ones({3})}}, {{"epoch", "1"}});
  const std::string original = read_bytes(path);
  auto expect_save_error = [&](const std::string& target, const StateDict& t,
                               const std::map<std::string, std::string>& meta,
                               const std::vector<std::string>& parts) {
    try {
      save_safetensors(target, t, meta);
      FAIL("save_safetensors accepted a bad save to " << target);
    } catch (const Error& e) {
      const std::string msg = e.what();
      INFO("message: " << msg);
      CHECK(msg.find(target) != std::string::npos);
      for (const std::string& p : parts)
        CHECK(msg.find(p) != std::string::npos);
    }
    CHECK_FALSE(fs::exists(target + ".tmp"));
    CHECK(read_bytes(path) == original);
  };

  SECTION("directory does not exist") {
    const std::string missing = dir.file("no/such/dir/ckpt.safetensors");
    expect_save_error(missing, {{"w", Tensor::ones({3})}}, {}, {"cannot create"});
    CHECK_FALSE(fs::exists(missing));
  }
  SECTION("undefined tensor") {
    expect_save_error(path, {{"w", Tensor::ones({3})}, {"z", Tensor()}}, {}, {"'z'", "undefined"});
  }
  SECTION("reserved key") {
    expect_save_error(path, {{"__metadata__", Tensor::ones({1})}}, {}, {"'__metadata__'"});
  }
  SECTION("key that is not UTF-8") {
    expect_save_error(path, {{"bad\xff", Tensor::ones({1})}}, {}, {"UTF-8"});
  }
  SECTION("metadata that is not UTF-8") {
    expect_save_error(path, {{"w", Tensor::ones({1})}}, {{"m", "\xc3"}}, {"'m'", "UTF-8"});
  }
  SECTION("rename onto a non-empty directory fails and removes the temporary") {
    const std::string blocked = dir.file("blocked");
    fs::create_directories(fs::path(blocked) / "child");
    expect_save_error(blocked, {{"w", Tensor::ones({3})}}, {}, {"rename"});
    CHECK(fs::is_directory(fs::path(blocked) / "child"));
  }
  SECTION("a successful save replaces the file whole") {
    save_safetensors(path, {{"v", Tensor::zeros({2}, DType::Float64)}});
    const SafetensorsFile f = load_safetensors(path);
    CHECK(f.tensors.size() == 1);
    CHECK(f.tensors.count("v") == 1);
    CHECK(f.metadata.empty());
    CHECK_FALSE(fs::exists(path + ".tmp"));
  }
}
