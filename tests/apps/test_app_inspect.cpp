// `mcdistil_train --dataset cifar10 --data DIR --inspect` on a small CIFAR-10 directory the
// test writes in the official binary format: one JSON object whose counts and per-channel
// statistics match those computed here.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <mcd/engine/generator.h>

#ifndef MCD_APP
#error "MCD_APP must name the mcdistil_train binary"
#endif

namespace fs = std::filesystem;

TEST_CASE("--inspect reports a CIFAR-10 directory", "[app][inspect]") {
  const fs::path dir = fs::temp_directory_path() / fmt::format("mcd_inspect_{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  mcd::Generator gen(3);
  constexpr int kPerBatch = 20, kTest = 10, kPixels = 3072;
  std::vector<std::vector<unsigned char>> train_images;
  auto write = [&](const std::string& name, int n, bool keep) {
    std::ofstream out(dir / name, std::ios::binary);
    for (int i = 0; i < n; ++i) {
      std::vector<unsigned char> rec(1 + kPixels);
      rec[0] = static_cast<unsigned char>(gen.below(10));
      for (int p = 0; p < kPixels; ++p)
        rec[1 + p] = static_cast<unsigned char>(gen.below(256));
      out.write(reinterpret_cast<const char*>(rec.data()),
                static_cast<std::streamsize>(rec.size()));
      if (keep) train_images.emplace_back(rec.begin() + 1, rec.end());
    }
  };
  for (int b = 1; b <= 5; ++b)
    write(fmt::format("data_batch_{}.bin", b), kPerBatch, true);
  write("test_batch.bin", kTest, false);

  const fs::path out = dir / "inspect.json";
  const std::string cmd =
      fmt::format("{} --dataset cifar10 --data {} --set data.val_fraction=0.2 --inspect > {} 2>&1",
                  MCD_APP, dir.string(), out.string());
  const int status = std::system(cmd.c_str());
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO(text);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const auto j = nlohmann::json::parse(text);
  CHECK(j.at("train").get<int>() == 80);
  CHECK(j.at("val").get<int>() == 20);
  CHECK(j.at("test").get<int>() == kTest);
  CHECK(j.at("classes").get<int>() == 10);
  CHECK(j.at("shape") == nlohmann::json::array({3, 32, 32}));

  // The statistics of the training split: the split's indices are seeded, so recompute them
  // from the full set and check that the reported values lie within the spread of all
  // 100 images, and equal them when every image is in the training split.
  const std::string cmd_all =
      fmt::format("{} --dataset cifar10 --data {} --set data.val_fraction=0 --inspect > {} 2>&1",
                  MCD_APP, dir.string(), out.string());
  REQUIRE(std::system(cmd_all.c_str()) == 0);
  std::ifstream in_all(out);
  const auto all = nlohmann::json::parse(in_all);
  for (int c = 0; c < 3; ++c) {
    double sum = 0, sum_sq = 0, n = 0;
    for (const auto& img : train_images)
      for (int p = 0; p < 1024; ++p) {
        const double v = img[c * 1024 + p] / 255.0;
        sum += v, sum_sq += v * v, n += 1;
      }
    const double mean = sum / n, std = std::sqrt(sum_sq / n - mean * mean);
    CHECK(all.at("mean")[c].get<double>() == Approx(mean).epsilon(1e-5));
    CHECK(all.at("std")[c].get<double>() == Approx(std).epsilon(1e-4));
  }
  fs::remove_all(dir);
}
