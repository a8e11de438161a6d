// IDX reading: gzip and plain files written here are read back element by element, and every
// kind of damage gives an error naming the file and the problem.
#include <zlib.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <mcd/data/idx.h>
#include "support/test_files.h"

namespace fs = std::filesystem;
using mcd::data::Dataset;
using mcd::data::load_fashion_mnist;
using mcd::data::read_idx;

namespace {

using mcd::testing::TempDir;

std::vector<std::uint8_t> idx_bytes(std::uint32_t magic, const std::vector<std::uint32_t>& dims,
                                    const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> out;
  auto put32 = [&](std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8)
      out.push_back(static_cast<std::uint8_t>(v >> s));
  };
  put32(magic);
  for (std::uint32_t d : dims)
    put32(d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_plain(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// Writes `bytes` as a gzip file, split into `members` concatenated gzip members.
void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes, int members = 1) {
  std::size_t begin = 0;
  for (int m = 0; m < members; ++m) {
    const std::size_t end = m + 1 == members ? bytes.size() : bytes.size() * (m + 1) / members;
    gzFile f = gzopen(path.c_str(), m == 0 ? "wb" : "ab");
    REQUIRE(f != nullptr);
    if (end > begin) {
      REQUIRE(gzwrite(f, bytes.data() + begin, static_cast<unsigned>(end - begin)) ==
              static_cast<int>(end - begin));
    }
    REQUIRE(gzclose(f) == Z_OK);
    begin = end;
  }
}

std::vector<std::uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// n images of rows x cols with distinct-looking content, labels i % classes.
struct Sample {
  std::uint32_t n, rows, cols, classes;
  std::vector<std::uint8_t> pixels, labels;
  Sample(std::uint32_t n_, std::uint32_t rows_, std::uint32_t cols_, std::uint32_t classes_)
      : n(n_), rows(rows_), cols(cols_), classes(classes_) {
    std::mt19937 rng(n * 131 + rows * 7 + cols);
    pixels.resize(std::size_t{n} * rows * cols);
    for (auto& p : pixels)
      p = static_cast<std::uint8_t>(rng());
    for (std::uint32_t i = 0; i < n; ++i)
      labels.push_back(static_cast<std::uint8_t>(i % classes));
  }
  std::vector<std::uint8_t> images_file() const {
    return idx_bytes(0x00000803, {n, rows, cols}, pixels);
  }
  std::vector<std::uint8_t> labels_file() const { return idx_bytes(0x00000801, {n}, labels); }
};

void check_matches(const Dataset& d, const Sample& s, const std::string& name) {
  CHECK(d.name == name);
  REQUIRE(d.size() == s.n);
  CHECK(d.channels == 1);
  CHECK(d.height == s.rows);
  CHECK(d.width == s.cols);
  CHECK(d.num_classes == s.classes);
  REQUIRE(d.pixels.size() == s.pixels.size());
  for (std::size_t i = 0; i < s.pixels.size(); ++i) {
    if (d.pixels[i] != s.pixels[i])
      FAIL("pixel " << i << ": " << int(d.pixels[i]) << " vs " << int(s.pixels[i]));
  }
  for (std::size_t i = 0; i < s.labels.size(); ++i) {
    if (d.labels[i] != s.labels[i])
      FAIL("label " << i << ": " << d.labels[i] << " vs " << int(s.labels[i]));
  }
}

}  // namespace

TEST_CASE("read_idx reads gzip and plain IDX files element by element", "[data][idx]") {
  TempDir dir;
  const Sample s(7, 5, 3, 4);
  SECTION("gzip") {
    write_gz(dir.file("img.gz"), s.images_file());
    write_gz(dir.file("lab.gz"), s.labels_file());
    check_matches(read_idx(dir.file("img.gz"), dir.file("lab.gz"), 4, "tiny"), s, "tiny");
  }
  SECTION("plain") {
    write_plain(dir.file("img"), s.images_file());
    write_plain(dir.file("lab"), s.labels_file());
    check_matches(read_idx(dir.file("img"), dir.file("lab"), 4, "plain"), s, "plain");
  }
  SECTION("gzip images, plain labels") {
    write_gz(dir.file("img.gz"), s.images_file());
    write_plain(dir.file("lab"), s.labels_file());
    check_matches(read_idx(dir.file("img.gz"), dir.file("lab"), 4, "mixed"), s, "mixed");
  }
  SECTION("zero images") {
    const Sample empty(0, 4, 4, 3);
    write_gz(dir.file("img.gz"), empty.images_file());
    write_gz(dir.file("lab.gz"), empty.labels_file());
    const Dataset d = read_idx(dir.file("img.gz"), dir.file("lab.gz"), 3, "empty");
    CHECK(d.size() == 0);
    CHECK(d.height == 4);
    CHECK(d.pixels.empty());
  }
}

TEST_CASE("read_idx inflates large and multi-member gzip files", "[data][idx]") {
  TempDir dir;
  const Sample s(3001, 28, 28, 10);  // 2.3 MB of incompressible pixels
  write_gz(dir.file("img.gz"), s.images_file(), 3);
  write_gz(dir.file("lab.gz"), s.labels_file(), 2);
  check_matches(read_idx(dir.file("img.gz"), dir.file("lab.gz"), 10, "big"), s, "big");
}

TEST_CASE("read_idx errors name the file and the problem", "[data][idx]") {
  using Catch::Contains;
  TempDir dir;
  const Sample s(5, 3, 4, 5);
  const std::string img = dir.file("img.gz"), lab = dir.file("lab.gz");
  write_gz(img, s.images_file());
  write_gz(lab, s.labels_file());
  REQUIRE_NOTHROW(read_idx(img, lab, 5, "ok"));

  SECTION("missing file") {
    const std::string missing = dir.file("nope-images.gz");
    REQUIRE_THROWS_WITH(read_idx(missing, lab, 5, "x"),
                        Contains(missing) && Contains("does not exist"));
    REQUIRE_THROWS_WITH(read_idx(img, missing, 5, "x"),
                        Contains(missing) && Contains("does not exist"));
  }
  SECTION("a directory instead of a file") {
    REQUIRE_THROWS_WITH(read_idx(dir.path.string(), lab, 5, "x"),
                        Contains(dir.path.string()) && Contains("directory"));
  }
  SECTION("wrong magic") {
    std::vector<std::uint8_t> bytes = s.images_file();
    bytes[0] = 0x12;
    bytes[2] = 0x34;
    write_gz(dir.file("badmagic.gz"), bytes);
    REQUIRE_THROWS_WITH(read_idx(dir.file("badmagic.gz"), lab, 5, "x"),
                        Contains("badmagic.gz") && Contains("bad magic number 0x12003403") &&
                            Contains("0x00000803"));
    // A labels file given as images and an images file given as labels.
    REQUIRE_THROWS_WITH(read_idx(lab, lab, 5, "x"),
                        Contains(lab) && Contains("wrong dimension count 1"));
    REQUIRE_THROWS_WITH(read_idx(img, img, 5, "x"),
                        Contains(img) && Contains("wrong dimension count 3"));
  }
  SECTION("wrong dimension count") {
    write_gz(dir.file("2d.gz"), idx_bytes(0x00000802, {5, 12}, s.pixels));
    REQUIRE_THROWS_WITH(
        read_idx(dir.file("2d.gz"), lab, 5, "x"),
        Contains("2d.gz") && Contains("wrong dimension count 2") && Contains("expected 3"));
  }
  SECTION("truncated gzip") {
    const std::vector<std::uint8_t> gz = read_all(img);
    for (std::size_t cut : {gz.size() / 2, gz.size() - 2}) {
      INFO("kept " << cut << " of " << gz.size() << " bytes");
      write_plain(dir.file("trunc.gz"), {gz.begin(), gz.begin() + static_cast<long>(cut)});
      REQUIRE_THROWS_WITH(read_idx(dir.file("trunc.gz"), lab, 5, "x"),
                          Contains("trunc.gz") && Contains("truncated gzip stream"));
    }
  }
  SECTION("corrupt gzip checksum") {
    std::vector<std::uint8_t> gz = read_all(img);
    gz[gz.size() - 6] ^= 0xff;  // inside the CRC-32 of the trailer
    write_plain(dir.file("crc.gz"), gz);
    REQUIRE_THROWS_WITH(read_idx(dir.file("crc.gz"), lab, 5, "x"),
                        Contains("crc.gz") && Contains("corrupt gzip stream"));
  }
  SECTION("trailing garbage after the gzip stream") {
    std::vector<std::uint8_t> gz = read_all(img);
    gz.push_back(0);
    gz.push_back(1);
    gz.push_back(2);
    write_plain(dir.file("tail.gz"), gz);
    REQUIRE_THROWS_WITH(read_idx(dir.file("tail.gz"), lab, 5, "x"),
                        Contains("tail.gz") && Contains("3 trailing bytes"));
  }
  SECTION("truncated data") {
    std::vector<std::uint8_t> bytes = s.images_file();
    bytes.resize(bytes.size() - 7);
    write_gz(dir.file("short.gz"), bytes);
    REQUIRE_THROWS_WITH(read_idx(dir.file("short.gz"), lab, 5, "x"),
                        Contains("short.gz") && Contains("holds 53 data bytes, expected 60") &&
                            Contains("truncated"));
    write_plain(dir.file("short_plain"), bytes);
    REQUIRE_THROWS_WITH(read_idx(dir.file("short_plain"), lab, 5, "x"),
                        Contains("short_plain") && Contains("expected 60"));
    write_plain(dir.file("header_only"), {0, 0, 8, 3, 0, 0});
    REQUIRE_THROWS_WITH(read_idx(dir.file("header_only"), lab, 5, "x"),
                        Contains("header_only") && Contains("too short"));
    write_plain(dir.file("empty"), {});
    REQUIRE_THROWS_WITH(read_idx(dir.file("empty"), lab, 5, "x"),
                        Contains("empty") && Contains("too short"));
  }
  SECTION("trailing data") {
    std::vector<std::uint8_t> bytes = s.labels_file();
    bytes.push_back(1);
    write_gz(dir.file("long.gz"), bytes);
    REQUIRE_THROWS_WITH(
        read_idx(img, dir.file("long.gz"), 5, "x"),
        Contains("long.gz") && Contains("holds 6 data bytes, expected 5") && Contains("trailing"));
  }
  SECTION("image and label counts differ") {
    const Sample four(4, 3, 4, 5);
    write_gz(dir.file("lab4.gz"), four.labels_file());
    REQUIRE_THROWS_WITH(
        read_idx(img, dir.file("lab4.gz"), 5, "x"),
        Contains(img) && Contains("lab4.gz") && Contains("5 images") && Contains("4 labels"));
  }
  SECTION("label out of range") {
    std::vector<std::uint8_t> labels = s.labels;
    labels[3] = 7;
    write_gz(dir.file("lab7.gz"), idx_bytes(0x00000801, {5}, labels));
    REQUIRE_THROWS_WITH(
        read_idx(img, dir.file("lab7.gz"), 5, "x"),
        Contains("lab7.gz") && Contains("label 7 at index 3") && Contains("num_classes = 5"));
    REQUIRE_THROWS_WITH(read_idx(img, lab, 0, "x"), Contains(lab) && Contains("num_classes"));
  }
}

TEST_CASE("load_fashion_mnist reads a directory of IDX files", "[data][idx]") {
  using Catch::Contains;
  TempDir dir;
  const Sample train(12, 6, 5, 10), test(4, 6, 5, 10);
  write_gz(dir.file("train-images-idx3-ubyte.gz"), train.images_file());
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), train.labels_file());
  write_plain(dir.file("t10k-images-idx3-ubyte"), test.images_file());  // uncompressed name
  SECTION("missing directory") {
    const std::string missing = dir.file("no_such_dir");
    REQUIRE_THROWS_WITH(load_fashion_mnist(missing),
                        Contains(missing) && Contains("does not exist"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(load_fashion_mnist(dir.path.string()),
                        Contains("t10k-labels-idx1-ubyte.gz") && Contains("does not exist"));
  }
  SECTION("complete") {
    write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), test.labels_file());
    const mcd::data::TrainTest tt = load_fashion_mnist(dir.path.string());
    check_matches(tt.train, train, "fashion-mnist/train");
    check_matches(tt.test, test, "fashion-mnist/test");
  }
}

TEST_CASE("the installed Fashion-MNIST has the published sizes", "[data][idx][fashion]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) {
    WARN("SKIPPED: " << dir << " is not installed (apt-get install dataset-fashion-mnist)");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const mcd::data::TrainTest tt = load_fashion_mnist(dir);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("loaded Fashion-MNIST train+test in " << seconds << " s");
  for (const Dataset* d : {&tt.train, &tt.test}) {
    CHECK(d->channels == 1);
    CHECK(d->height == 28);
    CHECK(d->width == 28);
    CHECK(d->num_classes == 10);
  }
  REQUIRE(tt.train.size() == 60000);
  REQUIRE(tt.test.size() == 10000);
  std::vector<std::int64_t> train_count(10, 0), test_count(10, 0);
  for (std::int64_t l : tt.train.labels)
    ++train_count[static_cast<std::size_t>(l)];
  for (std::int64_t l : tt.test.labels)
    ++test_count[static_cast<std::size_t>(l)];
  CHECK(train_count == std::vector<std::int64_t>(10, 6000));
  CHECK(test_count == std::vector<std::int64_t>(10, 1000));
  // Not a blank file: pixels span the full byte range.
  const auto [lo, hi] = std::minmax_element(tt.train.pixels.begin(), tt.train.pixels.end());
  CHECK(*lo == 0);
  CHECK(*hi == 255);
}
