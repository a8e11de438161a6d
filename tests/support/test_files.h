// Small helpers shared by tests that write files: a scratch directory removed with its
// contents, and the index list 0..n-1.
#pragma once
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace mcd::testing {

// A fresh directory under the system temp dir; file() creates parent folders as needed.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "mcd_test") {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           (tag + "_" + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& rel) const {
    const std::filesystem::path p = path / rel;
    std::filesystem::create_directories(p.parent_path());
    return p.string();
  }
};

inline std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}

}  // namespace mcd::testing
