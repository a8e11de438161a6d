// Seeded mutation fuzzing of every binary reader (IDX plain and gzip, CIFAR, JPEG, PNG, image
// folders, Tiny ImageNet's text files) and the safetensors parser. Each mutated input must be
// read into self-consistent output or rejected by a std::exception whose message names the file;
// a crash, a hang, a sanitizer report or a single allocation above the format's cap fails.
// Environment: MCD_FUZZ_SECONDS (time per format, default 3), MCD_FUZZ_ITERATIONS (count per
// format), MCD_FUZZ_SEED, MCD_FUZZ_FIRST (first iteration). Iteration i depends only on the seed
// and i, so a failure is reproduced with MCD_FUZZ_SEED=s MCD_FUZZ_FIRST=i MCD_FUZZ_ITERATIONS=1.
#include <png.h>
#include <zlib.h>
#include <cstdio>

#include <jpeglib.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include <mcd/data/cifar.h>
#include <mcd/data/idx.h>
#include <mcd/data/image_decode.h>
#include <mcd/data/image_folder.h>
#include <mcd/data/tiny_imagenet.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>
#include "support/test_files.h"

namespace {
// While a reader runs, a single operator new above this many bytes is refused (0: no cap), so
// an allocation sized from an unchecked header field fails the test instead of the machine.
std::atomic<std::size_t> g_alloc_cap{0};
std::atomic<std::size_t> g_oversized{0};  // the largest refused request

void* checked_alloc(std::size_t n) {
  const std::size_t cap = g_alloc_cap.load(std::memory_order_relaxed);
  if (cap != 0 && n > cap) {
    std::size_t prev = g_oversized.load();
    while (n > prev && !g_oversized.compare_exchange_weak(prev, n)) {
    }
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

// Every non-aligned form is replaced, so that new and delete always pair malloc with free
// (the sanitizer runtime would otherwise supply the forms left out).
void* operator new(std::size_t n) {
  return checked_alloc(n);
}
void* operator new[](std::size_t n) {
  return checked_alloc(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return checked_alloc(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept {
  return operator new(n, tag);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using mcd::Generator;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

using mcd::testing::TempDir;

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

double fuzz_seconds() {
  const char* v = std::getenv("MCD_FUZZ_SECONDS");
  return v != nullptr && *v != '\0' ? std::strtod(v, nullptr) : 3.0;
}

// splitmix64 of (seed, i): independent, reproducible generators per iteration.
std::uint64_t mix(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s)
    h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::size_t pick(Generator& g, std::size_t n) {
  return static_cast<std::size_t>(g.below(n));
}
bool coin(Generator& g, std::uint64_t one_in) {
  return g.below(one_in) == 0;
}

// ---- generic mutations

std::uint64_t interesting_word(Generator& g, std::size_t size) {
  const std::uint64_t v[] = {0,          1,          0x7f,       0x80,
                             0xff,       0xffff,     0x7fffffff, 0x80000000,
                             0xffffffff, size,       size + 1,   size > 0 ? size - 1 : 0,
                             1ull << 40, 1ull << 63, ~0ull,      0x7fffffffffffffffull};
  return v[pick(g, std::size(v))];
}

void put_word(Bytes& b, std::size_t pos, std::uint64_t v, std::size_t width, bool big_endian) {
  for (std::size_t k = 0; k < width && pos + k < b.size(); ++k) {
    const std::size_t shift = 8 * (big_endian ? width - 1 - k : k);
    b[pos + k] = static_cast<std::uint8_t>(v >> shift);
  }
}

void mutate_generic(Bytes& b, Generator& g) {
  static constexpr std::uint8_t kBytes[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x0a, 0x20};
  const std::size_t n = b.size();
  switch (g.below(8)) {
    case 0:  // bit flip
      if (n > 0) b[pick(g, n)] ^= static_cast<std::uint8_t>(1u << g.below(8));
      break;
    case 1:
      if (n > 0) b[pick(g, n)] = kBytes[pick(g, std::size(kBytes))];
      break;
    case 2:
      if (n > 0) b[pick(g, n)] = static_cast<std::uint8_t>(g.next_u64());
      break;
    case 3: {  // a length-like value, either byte order
      static constexpr std::size_t kWidths[] = {2, 4, 8};
      if (n > 0) put_word(b, pick(g, n), interesting_word(g, n), kWidths[g.below(3)], coin(g, 2));
      break;
    }
    case 4:
      b.resize(pick(g, n + 1));
      break;
    case 5:
      for (std::size_t k = 1 + pick(g, 64); k > 0; --k)
        b.push_back(static_cast<std::uint8_t>(g.next_u64()));
      break;
    case 6:
    case 7: {  // duplicate or remove a chunk
      if (n == 0) break;
      const std::size_t begin = pick(g, n), len = 1 + pick(g, std::min<std::size_t>(n - begin, 64));
      if (g.below(2) == 0) {
        const Bytes chunk(b.begin() + static_cast<long>(begin),
                          b.begin() + static_cast<long>(begin + len));
        b.insert(b.begin() + static_cast<long>(pick(g, n + 1)), chunk.begin(), chunk.end());
      } else {
        b.erase(b.begin() + static_cast<long>(begin), b.begin() + static_cast<long>(begin + len));
      }
      break;
    }
  }
}

void mutate_generic_n(Bytes& b, Generator& g, std::size_t at_least = 0) {
  for (std::size_t k = at_least + pick(g, 3); k > 0; --k)
    mutate_generic(b, g);
}

std::uint32_t be32(const Bytes& b, std::size_t p) {
  return std::uint32_t{b[p]} << 24 | std::uint32_t{b[p + 1]} << 16 | std::uint32_t{b[p + 2]} << 8 |
         b[p + 3];
}

// ---- the driver

// One mutated case: the inputs as written (kept for the failure report) and what went wrong.
struct Trial {
  std::size_t alloc_cap = 0;
  std::vector<std::pair<std::string, Bytes>> inputs;
  std::string failure;
  void fail_with(const std::string& why) {
    if (failure.empty()) failure = why;
  }
};

// Runs `read` under the allocation cap. Returns true when it returned; false when it threw a
// std::exception with a non-empty message naming one of `names` (any, if `names` is empty).
template <class Read>
bool guarded(Trial& t, const std::vector<std::string>& names, Read&& read) {
  g_oversized = 0;
  g_alloc_cap = t.alloc_cap;
  std::string message;
  bool returned = false;
  try {
    read();
    returned = true;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "\x01";
    t.fail_with("threw something that is not a std::exception");
  }
  g_alloc_cap = 0;
  if (g_oversized != 0) {
    t.fail_with("requested " + std::to_string(g_oversized.load()) +
                " bytes in one allocation (cap " + std::to_string(t.alloc_cap) + ")");
  }
  if (returned) return true;
  if (message.empty()) t.fail_with("threw an exception with an empty what()");
  const bool named = names.empty() || std::any_of(names.begin(), names.end(), [&](const auto& n) {
                       return message.find(n) != std::string::npos;
                     });
  if (!named) t.fail_with("error message does not name the file: " + message);
  return false;
}

using Body = std::function<bool(Generator&, Trial&)>;  // true: the reader accepted the input

void run_fuzz(const std::string& format, std::size_t default_iterations, std::size_t alloc_cap,
              const Body& body) {
  const std::uint64_t seed = env_u64("MCD_FUZZ_SEED", 20240611);
  const std::uint64_t first = env_u64("MCD_FUZZ_FIRST", 0);
  const std::uint64_t iterations = env_u64("MCD_FUZZ_ITERATIONS", default_iterations);
  const double seconds = fuzz_seconds();
  const auto start = std::chrono::steady_clock::now();
  std::size_t tried = 0, accepted = 0;
  for (std::uint64_t i = first; i < first + iterations; ++i) {
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    if (elapsed.count() > seconds) break;
    Generator gen(mix(seed ^ fnv1a(format), i));
    Trial t;
    t.alloc_cap = alloc_cap;
    const bool ok = body(gen, t);
    ++tried;
    accepted += ok ? 1 : 0;
    if (!t.failure.empty()) {
      const fs::path keep = fs::temp_directory_path() / "mcd_fuzz_failures";
      fs::create_directories(keep);
      std::string saved;
      for (std::size_t k = 0; k < t.inputs.size(); ++k) {
        const fs::path p =
            keep / (format + "_seed" + std::to_string(seed) + "_iter" + std::to_string(i) + "_" +
                    std::to_string(k) + "_" + fs::path(t.inputs[k].first).filename().string());
        write_bytes(p.string(), t.inputs[k].second);
        saved += "\n  " + t.inputs[k].first + " -> " + p.string();
      }
      FAIL("fuzz " << format << ": " << t.failure << "\n  reproduce: MCD_FUZZ_SEED=" << seed
                   << " MCD_FUZZ_FIRST=" << i << " MCD_FUZZ_ITERATIONS=1\n  inputs:" << saved);
    }
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::cout << "fuzz " << format << ": " << tried << " inputs tried, " << accepted << " accepted, "
            << tried - accepted << " rejected (seed " << seed << ", " << took.count() << " s)\n";
  CHECK(tried > 0);
}

// ---- IDX

Bytes idx_bytes(std::uint32_t magic, const std::vector<std::uint32_t>& dims, const Bytes& data) {
  Bytes out;
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

// A single-member gzip stream of `plain`, in memory.
Bytes gzip_bytes(const Bytes& plain) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, static_cast<uLong>(plain.size())) + 32);
  zs.next_in = const_cast<Bytef*>(plain.data());
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// Header fields set to huge, zero or off-by-one values; magic type and rank bytes; labels.
void mutate_idx(Bytes& b, std::size_t ndims, Generator& g) {
  const std::size_t n = b.size();
  switch (g.below(3)) {
    case 0: {
      const std::uint64_t v[] = {0, 1, 0xffffffff, 0x80000000, 0x7fffffff, 1u << 20, 1u << 16};
      const std::size_t field = 4 + 4 * pick(g, ndims);
      if (field + 4 <= n) {
        const std::uint32_t old = be32(b, field);
        const std::uint64_t value = coin(g, 3) ? old + g.below(3) - 1 : v[pick(g, std::size(v))];
        put_word(b, field, value, 4, true);
      }
      break;
    }
    case 1:
      if (n >= 4)
        b[2 + pick(g, 2)] = static_cast<std::uint8_t>(coin(g, 2) ? g.below(5) : 8 + g.below(8));
      break;
    case 2: {
      const std::size_t header = 4 + 4 * ndims;
      static constexpr std::uint8_t kLabels[] = {9, 10, 11, 0x7f, 0xff};
      if (n > header) b[header + pick(g, n - header)] = kLabels[pick(g, std::size(kLabels))];
      break;
    }
  }
}

TEST_CASE("fuzz: read_idx on mutated plain and gzip IDX files", "[data][fuzz][idx]") {
  TempDir dir("idx");
  run_fuzz("idx", 2000, 64 * kMiB, [&](Generator& g, Trial& t) {
    const auto n = static_cast<std::uint32_t>(1 + g.below(4)),
               rows = static_cast<std::uint32_t>(1 + g.below(6)),
               cols = static_cast<std::uint32_t>(1 + g.below(6));
    Bytes pixels(std::size_t{n} * rows * cols), labels(n);
    for (auto& p : pixels)
      p = static_cast<std::uint8_t>(g.next_u64());
    for (auto& l : labels)
      l = static_cast<std::uint8_t>(g.below(10));
    Bytes files[2] = {idx_bytes(0x803, {n, rows, cols}, pixels), idx_bytes(0x801, {n}, labels)};
    const std::size_t ndims[2] = {3, 1};
    const std::size_t target = pick(g, 3);  // 0 images, 1 labels, 2 both
    for (std::size_t f = 0; f < 2; ++f) {
      if (target != f && target != 2) continue;
      if (coin(g, 2)) mutate_idx(files[f], ndims[f], g);
      mutate_generic_n(files[f], g);
    }
    const Bytes plain[2] = {files[0], files[1]};
    bool gz_mutated = false;
    for (auto& f : files) {
      if (!coin(g, 2)) continue;
      f = gzip_bytes(f);
      if (coin(g, 3)) {
        gz_mutated = true;
        if (coin(g, 3) && f.size() >= 4)  // ISIZE, the trailer's uncompressed length
          put_word(f, f.size() - 4, interesting_word(g, f.size()), 4, false);
        else
          mutate_generic_n(f, g, 1);
      }
    }
    const std::string paths[2] = {dir.file("images.idx"), dir.file("labels.idx")};
    for (std::size_t f = 0; f < 2; ++f) {
      write_bytes(paths[f], files[f]);
      t.inputs.emplace_back(paths[f], files[f]);
    }
    mcd::data::Dataset d;
    if (!guarded(t, {paths[0], paths[1]},
                 [&] { d = mcd::data::read_idx(paths[0], paths[1], 10, "fuzz"); }))
      return false;
    const auto numel = static_cast<std::size_t>(d.size() * d.channels * d.height * d.width);
    if (d.channels != 1 || d.height <= 0 || d.width <= 0 || d.pixels.size() != numel)
      t.fail_with("accepted with inconsistent sizes: " + std::to_string(d.pixels.size()) +
                  " pixels for " + std::to_string(d.size()) + " x " + std::to_string(d.height) +
                  " x " + std::to_string(d.width));
    for (std::int64_t l : d.labels)
      if (l < 0 || l >= 10) t.fail_with("accepted label " + std::to_string(l));
    // A plain file (or an intact gzip of one) is exactly its header followed by the data.
    if (!gz_mutated && t.failure.empty()) {
      if (!std::equal(d.pixels.begin(), d.pixels.end(), plain[0].begin() + 16, plain[0].end()))
        t.fail_with("accepted pixels differ from the file's data bytes");
      if (!std::equal(d.labels.begin(), d.labels.end(), plain[1].begin() + 8, plain[1].end()))
        t.fail_with("accepted labels differ from the file's data bytes");
    }
    return true;
  });
}

// ---- CIFAR

TEST_CASE("fuzz: read_cifar on mutated CIFAR-10 and CIFAR-100 files", "[data][fuzz][cifar]") {
  TempDir dir("cifar");
  constexpr std::size_t kImage = 3072;
  run_fuzz("cifar", 1000, 16 * kMiB, [&](Generator& g, Trial& t) {
    using mcd::data::CifarFormat;
    const CifarFormat formats[] = {CifarFormat::cifar10, CifarFormat::cifar100_fine,
                                   CifarFormat::cifar100_coarse};
    const CifarFormat format = formats[pick(g, 3)];
    const std::size_t label_bytes = format == CifarFormat::cifar10 ? 1 : 2;
    const std::size_t record = label_bytes + kImage;
    std::vector<std::string> paths;
    std::vector<Bytes> files(1 + pick(g, 2));
    for (std::size_t f = 0; f < files.size(); ++f) {
      for (std::size_t r = 1 + pick(g, 3); r > 0; --r) {
        if (label_bytes == 2) files[f].push_back(static_cast<std::uint8_t>(g.below(20)));
        files[f].push_back(static_cast<std::uint8_t>(g.below(label_bytes == 2 ? 100 : 10)));
        for (std::size_t k = 0; k < kImage; ++k)
          files[f].push_back(static_cast<std::uint8_t>(g.next_u64()));
      }
    }
    Bytes& victim = files[pick(g, files.size())];
    if (coin(g, 2)) {  // label bytes: in range, just past it, or far out
      static constexpr std::uint8_t kLabels[] = {9, 10, 19, 20, 99, 100, 0xff};
      const std::size_t r = pick(g, victim.size() / record);
      victim[r * record + pick(g, label_bytes)] = kLabels[pick(g, std::size(kLabels))];
      if (coin(g, 2)) mutate_generic_n(victim, g);
    } else {
      mutate_generic_n(victim, g, 1);
    }
    for (std::size_t f = 0; f < files.size(); ++f) {
      paths.push_back(dir.file("batch_" + std::to_string(f) + ".bin"));
      write_bytes(paths.back(), files[f]);
      t.inputs.emplace_back(paths.back(), files[f]);
    }
    mcd::data::Dataset d;
    if (!guarded(t, paths, [&] { d = mcd::data::read_cifar(paths, format, "fuzz"); })) return false;
    // Accepted: the records are exactly the files' bytes, labels taken from the right byte.
    Bytes pixels;
    std::vector<std::int64_t> labels;
    for (const Bytes& f : files) {
      if (f.size() % record != 0) t.fail_with("accepted a file that is not whole records");
      for (std::size_t r = 0; r + record <= f.size(); r += record) {
        labels.push_back(f[r + (format == CifarFormat::cifar100_fine ? 1 : 0)]);
        pixels.insert(pixels.end(), f.begin() + static_cast<long>(r + label_bytes),
                      f.begin() + static_cast<long>(r + record));
      }
    }
    if (d.pixels != pixels || d.labels != labels || d.channels * d.height * d.width != 3072)
      t.fail_with("accepted records differ from the files' bytes");
    for (std::int64_t l : d.labels)
      if (l < 0 || l >= d.num_classes) t.fail_with("accepted label " + std::to_string(l));
    return true;
  });
}

// ---- safetensors

// Replaces [begin, end) of `s` by `with`.
void splice(std::string& s, std::size_t begin, std::size_t end, const std::string& with) {
  s = s.substr(0, begin) + with + s.substr(end);
}

// Text mutations aimed at the header's semantics: numbers (offsets, shapes), strings (dtypes,
// keys, field names) and JSON structure.
void mutate_json(std::string& h, Generator& g) {
  std::vector<std::pair<std::size_t, std::size_t>> numbers, strings;
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (h[i] == '"') {
      const std::size_t close = h.find('"', i + 1);
      if (close == std::string::npos) break;
      strings.emplace_back(i + 1, close);
      i = close;
    } else if (std::isdigit(static_cast<unsigned char>(h[i])) != 0) {
      std::size_t j = i;
      while (j < h.size() && std::isdigit(static_cast<unsigned char>(h[j])) != 0)
        ++j;
      numbers.emplace_back(i, j);
      i = j - 1;
    }
  }
  const std::size_t kind = pick(g, 4);
  if (kind == 0 && !numbers.empty()) {
    static const char* kNumbers[] = {"0",
                                     "1",
                                     "-1",
                                     "4",
                                     "7",
                                     "8",
                                     "16",
                                     "4294967296",
                                     "9223372036854775807",
                                     "9223372036854775808",
                                     "18446744073709551615",
                                     "18446744073709551616",
                                     "99999999999999999999999",
                                     "1e3",
                                     "1.5",
                                     "-0",
                                     "1099511627776"};
    const auto [b, e] = numbers[pick(g, numbers.size())];
    std::string with = kNumbers[pick(g, std::size(kNumbers))];
    if (coin(g, 3)) {
      const long long v = std::atoll(h.substr(b, e - b).c_str());
      with = std::to_string(v + static_cast<long long>(g.below(17)) - 8);
    }
    splice(h, b, e, with);
  } else if (kind == 1 && !strings.empty()) {
    static const char* kStrings[] = {
        "F32",   "F64", "I64",          "BF16",         "U8", "F16",     "",       "dtype",
        "shape", "f32", "data_offsets", "__metadata__", "a",  "\\u0000", "\\ud800"};
    const auto [b, e] = strings[pick(g, strings.size())];
    splice(h, b, e, kStrings[pick(g, std::size(kStrings))]);
  } else if (kind == 2 && !h.empty()) {
    static const char kStructure[] = "{}[],:\" -0";
    const std::size_t at = pick(g, h.size());
    if (coin(g, 2))
      h.erase(at, 1);
    else
      h.insert(at, 1, kStructure[pick(g, sizeof(kStructure) - 1)]);
  } else if (!h.empty()) {  // duplicate a span: repeated keys and fields
    const std::size_t b = pick(g, h.size()),
                      len = 1 + pick(g, std::min<std::size_t>(h.size() - b, 80));
    h.insert(pick(g, h.size() + 1), h.substr(b, len));
  }
}

TEST_CASE("fuzz: load_safetensors on mutated files and headers", "[engine][fuzz][safetensors]") {
  TempDir dir("safetensors");
  const std::string path = dir.file("model.safetensors");
  // Valid files from the engine's own writer, made once: a save syncs the disk, which is slow.
  std::vector<Bytes> seeds;
  Generator seed_gen(7);
  for (int s = 0; s < 16; ++s) {
    mcd::StateDict sd;
    const mcd::DType dtypes[] = {mcd::DType::Float32, mcd::DType::Float64, mcd::DType::Int64};
    for (std::size_t k = 1 + pick(seed_gen, 3); k > 0; --k) {
      mcd::Shape shape;  // rank 0..3, some dims 0
      for (std::size_t r = pick(seed_gen, 4); r > 0; --r)
        shape.push_back(static_cast<std::int64_t>(seed_gen.below(4)));
      const mcd::DType dt = dtypes[pick(seed_gen, 3)];
      sd[std::to_string(k) + ".weight"] =
          dt == mcd::DType::Int64 ? mcd::Tensor::arange(mcd::shape_numel(shape)).reshape(shape)
                                  : mcd::Tensor::randn(shape, seed_gen, dt);
    }
    std::map<std::string, std::string> meta;
    if (s % 2 == 0) meta["epoch"] = std::to_string(s);
    mcd::save_safetensors(path, sd, meta);
    std::ifstream in(path, std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  run_fuzz("safetensors", 1500, 16 * kMiB, [&](Generator& g, Trial& t) {
    Bytes b = seeds[pick(g, seeds.size())];
    REQUIRE(b.size() >= 8);
    std::uint64_t n = 0;
    for (int k = 0; k < 8; ++k)
      n |= std::uint64_t{b[static_cast<std::size_t>(k)]} << (8 * k);
    REQUIRE(8 + n <= b.size());

    switch (g.below(3)) {
      case 0: {  // the JSON text, then (usually) a length prefix that matches it
        std::string h(b.begin() + 8, b.begin() + static_cast<long>(8 + n));
        for (std::size_t k = 1 + pick(g, 3); k > 0; --k)
          mutate_json(h, g);
        if (coin(g, 2)) h.append((8 - h.size() % 8) % 8, ' ');
        Bytes out(8);
        put_word(out, 0, coin(g, 4) ? n : h.size(), 8, false);
        out.insert(out.end(), h.begin(), h.end());
        out.insert(out.end(), b.begin() + static_cast<long>(8 + n), b.end());
        b = std::move(out);
        break;
      }
      case 1: {  // the length prefix alone
        const std::uint64_t v[] = {0,          1,          n - 1,        n + 1,
                                   n + 8,      n - 8,      b.size() - 8, b.size() - 7,
                                   1ull << 40, 1ull << 63, ~0ull};
        put_word(b, 0, v[pick(g, std::size(v))], 8, false);
        break;
      }
      default:
        mutate_generic_n(b, g, 1);
    }
    if (coin(g, 4)) mutate_generic(b, g);
    write_bytes(path, b);
    t.inputs.emplace_back(path, b);

    mcd::SafetensorsFile file;
    if (!guarded(t, {path}, [&] { file = mcd::load_safetensors(path); })) return false;
    // Accepted: the tensors tile the data section, and each one's bytes are found in it.
    std::uint64_t header = 0;
    for (int k = 0; k < 8; ++k)
      header |= std::uint64_t{b[static_cast<std::size_t>(k)]} << (8 * k);
    std::uint64_t total = 0;
    const auto data = b.begin() + static_cast<long>(8 + header);
    for (const auto& [key, tensor] : file.tensors) {
      if (!tensor.is_contiguous()) t.fail_with("tensor '" + key + "' is not contiguous");
      const std::size_t bytes =
          static_cast<std::size_t>(tensor.numel()) * mcd::dtype_size(tensor.dtype());
      total += bytes;
      const auto* p = static_cast<const std::uint8_t*>(tensor.raw_data());
      if (bytes > 0 && std::search(data, b.end(), p, p + bytes) == b.end())
        t.fail_with("tensor '" + key + "' holds bytes that are not in the data section");
    }
    if (total != b.size() - 8 - header)
      t.fail_with("tensors hold " + std::to_string(total) + " bytes but the data section has " +
                  std::to_string(b.size() - 8 - header));
    return true;
  });
}

// ---- JPEG and PNG

constexpr int kImgH = 8, kImgW = 11;  // every seed image has this size, so folders accept them

Bytes make_pixels(int h, int w, int c, unsigned seed) {
  Bytes px(static_cast<std::size_t>(h * w * c));
  for (std::size_t k = 0; k < px.size(); ++k)
    px[k] = static_cast<std::uint8_t>((k * 7 + seed * 31 + (k % 5) * 13) % 251);
  return px;
}

Bytes encode_jpeg(int h, int w, int c, bool progressive, unsigned seed) {
  const Bytes px = make_pixels(h, w, c, seed);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_compress(&cinfo);
  unsigned char* mem = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &mem, &size);
  cinfo.image_width = static_cast<JDIMENSION>(w);
  cinfo.image_height = static_cast<JDIMENSION>(h);
  cinfo.input_components = c;
  cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 90, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<std::uint8_t*>(px.data()) +
                   std::size_t{cinfo.next_scanline} * static_cast<std::size_t>(w * c);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  Bytes out(mem, mem + size);
  std::free(mem);
  return out;
}

void png_append(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}

Bytes encode_png(int color_type, int bit_depth, bool interlaced, unsigned seed) {
  const int samples = color_type == PNG_COLOR_TYPE_GRAY         ? 1
                      : color_type == PNG_COLOR_TYPE_PALETTE    ? 1
                      : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                      : color_type == PNG_COLOR_TYPE_RGB        ? 3
                                                                : 4;
  Bytes rows = make_pixels(kImgH, kImgW, samples * (bit_depth == 16 ? 2 : 1), seed);
  std::vector<png_color> palette;
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    for (int k = 0; k < 4; ++k)
      palette.push_back({static_cast<png_byte>(60 * k), static_cast<png_byte>(200 - 40 * k), 7});
    for (auto& v : rows)
      v %= 4;
  }
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  REQUIRE((png != nullptr && info != nullptr));
  png_set_write_fn(png, &out, png_append, nullptr);
  png_set_IHDR(png, info, kImgW, kImgH, bit_depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
    png_byte alpha[2] = {0, 128};
    png_set_tRNS(png, info, alpha, 2, nullptr);
  }
  png_write_info(png, info);
  const std::size_t stride = rows.size() / kImgH;
  std::vector<png_bytep> ptrs;
  for (int y = 0; y < kImgH; ++y)
    ptrs.push_back(rows.data() + static_cast<std::size_t>(y) * stride);
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

const std::vector<Bytes>& seed_images() {
  static const std::vector<Bytes> images = [] {
    std::vector<Bytes> v;
    v.push_back(encode_jpeg(kImgH, kImgW, 1, false, 1));
    v.push_back(encode_jpeg(kImgH, kImgW, 3, false, 2));
    v.push_back(encode_jpeg(kImgH, kImgW, 3, true, 3));
    v.push_back(encode_png(PNG_COLOR_TYPE_GRAY, 8, false, 4));
    v.push_back(encode_png(PNG_COLOR_TYPE_RGB, 8, false, 5));
    v.push_back(encode_png(PNG_COLOR_TYPE_RGB_ALPHA, 8, true, 6));
    v.push_back(encode_png(PNG_COLOR_TYPE_PALETTE, 8, false, 7));
    v.push_back(encode_png(PNG_COLOR_TYPE_GRAY_ALPHA, 16, false, 8));
    return v;
  }();
  return images;
}

// A PNG chunk's data changed (IHDR fields by name), its length field, or the chunk duplicated
// or removed; the CRC is usually recomputed so the change reaches libpng's semantic checks.
void mutate_png(Bytes& b, Generator& g) {
  std::vector<std::size_t> chunks;  // offsets of the length fields
  for (std::size_t p = 8; p + 12 <= b.size() && p + 12 + be32(b, p) <= b.size();
       p += 12 + be32(b, p))
    chunks.push_back(p);
  if (chunks.empty()) return mutate_generic(b, g);
  const std::size_t c = chunks[pick(g, chunks.size())];
  const std::size_t len = be32(b, c);
  const bool ihdr = std::memcmp(&b[c + 4], "IHDR", 4) == 0 && len == 13;
  switch (g.below(4)) {
    case 0:
      if (ihdr) {
        const std::size_t field = pick(g, 7);  // width, height, depth, colour, comp, filter, lace
        if (field < 2) {
          const std::uint64_t v[] = {0, 1, 0x7fffffff, 0xffffffff, 65536, 1u << 20, 40000};
          put_word(b, c + 8 + 4 * field, v[pick(g, std::size(v))], 4, true);
        } else {
          const std::uint8_t v[] = {0, 1, 2, 3, 4, 6, 7, 8, 16, 255};
          b[c + 8 + 6 + field] = v[pick(g, std::size(v))];
        }
      } else if (len > 0) {
        b[c + 8 + pick(g, len)] = static_cast<std::uint8_t>(g.next_u64());
      }
      break;
    case 1:
      put_word(b, c, interesting_word(g, len), 4, true);
      return;  // a length change makes the CRC position meaningless
    case 2: {
      const Bytes chunk(b.begin() + static_cast<long>(c),
                        b.begin() + static_cast<long>(c + 12 + len));
      b.insert(b.begin() + static_cast<long>(c), chunk.begin(), chunk.end());
      return;
    }
    default:
      b.erase(b.begin() + static_cast<long>(c), b.begin() + static_cast<long>(c + 12 + len));
      return;
  }
  if (!coin(g, 4)) {
    const auto crc = crc32(0, &b[c + 4], static_cast<uInt>(len + 4));
    put_word(b, c + 8 + len, crc, 4, true);
  }
}

// JPEG segments before the scan (SOF dims, component count, tables, marker kinds) or bytes
// of the entropy-coded data, including stray markers.
void mutate_jpeg(Bytes& b, Generator& g) {
  std::vector<std::size_t> segments;  // offsets of 0xFF marker bytes
  std::size_t scan = b.size();
  for (std::size_t p = 2; p + 4 <= b.size() && b[p] == 0xff;) {
    segments.push_back(p);
    if (b[p + 1] == 0xda) {
      scan = std::min(b.size(), p + 2 + (std::size_t{b[p + 2]} << 8 | b[p + 3]));
      break;
    }
    p += 2 + (std::size_t{b[p + 2]} << 8 | b[p + 3]);
  }
  if (segments.empty()) return mutate_generic(b, g);
  const std::size_t s = segments[pick(g, segments.size())];
  const std::size_t len = std::size_t{b[s + 2]} << 8 | b[s + 3];
  const bool sof = b[s + 1] >= 0xc0 && b[s + 1] <= 0xc2;
  switch (g.below(5)) {
    case 0:
      if (sof && s + 10 <= b.size()) {
        const std::uint64_t v[] = {0, 1, 0xffff, 0x8000, 0x4000, 0x1000, 9};
        switch (g.below(4)) {
          case 0:
            b[s + 4] = static_cast<std::uint8_t>(coin(g, 2) ? 12 : g.below(20));
            break;
          case 1:
            put_word(b, s + 5, v[pick(g, std::size(v))], 2, true);
            break;
          case 2:
            put_word(b, s + 7, v[pick(g, std::size(v))], 2, true);
            break;
          default:
            b[s + 9] = static_cast<std::uint8_t>(coin(g, 2) ? g.below(5) : 255);
        }
        break;
      }
      [[fallthrough]];
    case 1:
      if (len > 2 && s + 2 + len <= b.size())
        b[s + 4 + pick(g, len - 2)] = coin(g, 2) ? static_cast<std::uint8_t>(g.next_u64()) : 0xff;
      break;
    case 2: {  // another marker kind: progressive, arithmetic, lossless, unknown
      const std::uint8_t markers[] = {0xc0, 0xc1, 0xc2, 0xc3, 0xc9, 0xcf, 0xc4, 0xdb, 0xdd, 0xd9};
      b[s + 1] = markers[pick(g, std::size(markers))];
      break;
    }
    case 3:
      put_word(b, s + 2, interesting_word(g, len), 2, true);
      break;
    default:
      if (scan < b.size()) {
        const std::size_t at = scan + pick(g, b.size() - scan);
        if (coin(g, 2)) {
          b[at] = static_cast<std::uint8_t>(g.next_u64());
        } else {
          const std::uint8_t stray[] = {0xd9, 0xd0, 0xd8, 0xc4, 0x00};
          b.insert(b.begin() + static_cast<long>(at), {0xff, stray[pick(g, std::size(stray))]});
        }
      }
  }
}

void mutate_image(Bytes& b, Generator& g) {
  if (coin(g, 2)) {
    if (b.size() > 2 && b[0] == 0xff && b[1] == 0xd8)
      mutate_jpeg(b, g);
    else
      mutate_png(b, g);
    if (coin(g, 3)) mutate_generic(b, g);
  } else {
    mutate_generic_n(b, g, 1);
  }
}

// The decoders' documented cap is 1 GiB of pixels; a little more for libpng/libjpeg rows.
constexpr std::size_t kImageAllocCap = 1024 * kMiB + 64 * kMiB;

TEST_CASE("fuzz: decode_image on mutated JPEGs and PNGs", "[data][fuzz][decode]") {
  TempDir dir("decode");
  const std::string path = dir.file("image.bin");
  run_fuzz("jpeg_png", 2000, kImageAllocCap, [&](Generator& g, Trial& t) {
    Bytes b = seed_images()[pick(g, seed_images().size())];
    mutate_image(b, g);
    const bool from_file = coin(g, 8);
    const std::string name = from_file ? path : "in-memory input";
    if (from_file) write_bytes(path, b);
    t.inputs.emplace_back(path, b);
    mcd::data::DecodedImage img;
    if (!guarded(t, {name}, [&] {
          img = from_file ? mcd::data::decode_image(path)
                          : mcd::data::decode_image_bytes(b.data(), b.size(), name);
        }))
      return false;
    if (img.channels < 1 || img.channels > 4 || img.height <= 0 || img.width <= 0 ||
        img.pixels.size() != static_cast<std::size_t>(img.channels * img.height * img.width)) {
      t.fail_with("decoded " + std::to_string(img.pixels.size()) + " bytes for " +
                  std::to_string(img.height) + "x" + std::to_string(img.width) + "x" +
                  std::to_string(img.channels));
      return true;
    }
    for (std::int64_t c : {1, 3}) {
      Bytes planar(static_cast<std::size_t>(c * img.height * img.width));
      guarded(t, {}, [&] { mcd::data::convert_to_planar(img, c, planar.data()); });
    }
    return true;
  });
}

TEST_CASE("fuzz: read_image_folder with a mutated image", "[data][fuzz][image_folder]") {
  TempDir dir("folder");
  const std::string root = (dir.path / "root").string();
  write_bytes(dir.file("root/a/good.png"), seed_images()[4]);
  const std::string bad = dir.file("root/b/nested/bad.jpg");
  run_fuzz("image_folder", 400, kImageAllocCap, [&](Generator& g, Trial& t) {
    Bytes b = seed_images()[pick(g, seed_images().size())];
    mutate_image(b, g);
    write_bytes(bad, b);
    t.inputs.emplace_back(bad, b);
    mcd::data::ReadOptions opt;
    opt.skip_bad_images = coin(g, 2);
    opt.channels = coin(g, 2) ? 1 : 3;
    mcd::data::Dataset d;
    if (!guarded(t, {root}, [&] { d = mcd::data::read_image_folder(root, opt, "fuzz"); }))
      return false;
    const std::int64_t expected = 2 - d.skipped;
    if (d.size() != expected || d.skipped < 0 || d.skipped > 1 ||
        (d.skipped && !opt.skip_bad_images))
      t.fail_with("accepted " + std::to_string(d.size()) + " images with " +
                  std::to_string(d.skipped) + " skipped, expected 2 in all");
    if (d.channels != opt.channels || d.height != kImgH || d.width != kImgW ||
        d.pixels.size() != static_cast<std::size_t>(d.size() * d.image_numel()))
      t.fail_with("accepted with inconsistent sizes");
    for (std::int64_t i = 0; i < d.size(); ++i)
      if (d.labels[static_cast<std::size_t>(i)] != i) t.fail_with("sample labels are not 0, 1");
    return true;
  });
}

// ---- Tiny ImageNet's text files

// Line and field edits (unknown, duplicate, empty or path-like names, stray CR, tab, NUL).
void mutate_lines(Bytes& b, Generator& g) {
  std::vector<std::string> lines(1);
  for (std::uint8_t c : b) {
    if (c == '\n')
      lines.emplace_back();
    else
      lines.back().push_back(static_cast<char>(c));
  }
  std::string& line = lines[pick(g, lines.size())];
  switch (g.below(5)) {
    case 0:
      lines.erase(lines.begin() + static_cast<long>(pick(g, lines.size())));
      break;
    case 1:
      lines.insert(lines.begin() + static_cast<long>(pick(g, lines.size() + 1)), line);
      break;
    case 2: {  // one tab-separated field replaced
      static const char* kFields[] = {"",      "n01",        "n02",        "n99",
                                      " ",     "val_0.JPEG", "val_7.JPEG", "../wnids.txt",
                                      "n01\r", ".",          "train/n01",  "val_1.JPEG\tn02"};
      std::vector<std::size_t> tabs{0};
      for (std::size_t i = 0; i < line.size(); ++i)
        if (line[i] == '\t') tabs.push_back(i + 1);
      const std::size_t f = pick(g, tabs.size());
      const std::size_t end = line.find('\t', tabs[f]);
      line.replace(tabs[f], (end == std::string::npos ? line.size() : end) - tabs[f],
                   kFields[pick(g, std::size(kFields))]);
      break;
    }
    case 3: {
      static const char kChars[] = {'\r', '\t', ' ', '\0', '\n', '/', '\xff'};
      line.insert(pick(g, line.size() + 1), 1, kChars[pick(g, std::size(kChars))]);
      break;
    }
    default:
      lines.emplace_back(std::string(1 + pick(g, 20000), coin(g, 2) ? 'x' : '\t'));
  }
  b.clear();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) b.push_back('\n');
    b.insert(b.end(), lines[i].begin(), lines[i].end());
  }
}

TEST_CASE("fuzz: load_tiny_imagenet with mutated wnids.txt and val_annotations.txt",
          "[data][fuzz][tiny_imagenet]") {
  TempDir dir("tiny");
  const std::string root = (dir.path / "root").string();
  write_bytes(dir.file("root/train/n01/images/n01_0.JPEG"), encode_jpeg(64, 64, 3, false, 1));
  write_bytes(dir.file("root/train/n02/images/n02_0.JPEG"), encode_jpeg(64, 64, 1, false, 2));
  write_bytes(dir.file("root/val/images/val_0.JPEG"), encode_jpeg(64, 64, 3, false, 3));
  write_bytes(dir.file("root/val/images/val_1.JPEG"), encode_jpeg(64, 64, 3, true, 4));
  const std::string wnids_path = dir.file("root/wnids.txt");
  const std::string ann_path = dir.file("root/val/val_annotations.txt");
  const std::string wnids = "n02\nn01\n",
                    ann = "val_0.JPEG\tn01\t0\t0\t10\t10\nval_1.JPEG\tn02\t1\t2\t3\t4\n";

  run_fuzz("tiny_imagenet", 500, 64 * kMiB, [&](Generator& g, Trial& t) {
    Bytes files[2] = {Bytes(wnids.begin(), wnids.end()), Bytes(ann.begin(), ann.end())};
    const std::size_t target = pick(g, 3);  // 0 wnids, 1 annotations, 2 both
    for (std::size_t f = 0; f < 2; ++f) {
      if (target != f && target != 2) continue;
      for (std::size_t k = 1 + pick(g, 2); k > 0; --k)
        mutate_lines(files[f], g);
      if (coin(g, 3)) mutate_generic(files[f], g);
    }
    write_bytes(wnids_path, files[0]);
    write_bytes(ann_path, files[1]);
    t.inputs.emplace_back(wnids_path, files[0]);
    t.inputs.emplace_back(ann_path, files[1]);
    mcd::data::TrainTest tt;
    if (!guarded(t, {root}, [&] { tt = mcd::data::load_tiny_imagenet(root); })) return false;
    for (const mcd::data::Dataset* d : {&tt.train, &tt.test}) {
      if (d->size() != 2 || d->channels != 3 || d->height != 64 || d->width != 64 ||
          d->pixels.size() != static_cast<std::size_t>(2 * 3 * 64 * 64) || d->num_classes != 2)
        t.fail_with("accepted " + d->name + " with inconsistent sizes or classes");
      for (std::int64_t l : d->labels)
        if (l < 0 || l >= d->num_classes) t.fail_with("accepted label " + std::to_string(l));
    }
    return true;
  });
}

}  // namespace
