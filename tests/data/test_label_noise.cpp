// Label noise: realised rates, symmetric flips never keeping the class, determinism by seed,
// instance-dependent flips driven by the images, and the run-directory file round trip.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include <mcd/data/label_noise.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/safetensors.h>

#include "support/random_dataset.h"

using namespace mcd::data;

namespace {

std::vector<std::int64_t> balanced_labels(std::int64_t n, std::int64_t k) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < n; ++i)
    v.push_back(i % k);
  return v;
}

Dataset random_dataset(std::int64_t n, std::int64_t k, std::uint64_t pixel_seed) {
  Dataset d = mcd::testing::random_dataset(n, 1, 4, 4, k, pixel_seed,
                                           [](std::int64_t, mcd::Generator&) { return 0; });
  d.labels = balanced_labels(n, k);
  return d;
}

std::int64_t count_differences(const std::vector<std::int64_t>& a,
                               const std::vector<std::int64_t>& b) {
  std::int64_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    n += a[i] != b[i];
  return n;
}

std::filesystem::path scratch_dir() {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("mcd_test_label_noise_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace

TEST_CASE("symmetric noise", "[data][label_noise]") {
  const std::vector<std::int64_t> clean = balanced_labels(20000, 10);
  for (double rate : {0.2, 0.5, 0.8}) {
    const NoisyLabels n = apply_symmetric_noise(clean, 10, rate, 3);
    CHECK(n.kind == "symmetric");
    CHECK(n.clean_labels == clean);
    CHECK(n.rate == rate);
    CHECK(n.seed == 3);
    // Binomial standard deviation is at most 0.0036 here; 0.02 is over five of them.
    CHECK(n.realised_rate == Approx(rate).margin(0.02));
    CHECK(n.realised_rate ==
          Approx(static_cast<double>(count_differences(n.labels, clean)) / 20000.0));
    for (std::int64_t y : n.labels) {
      REQUIRE(y >= 0);
      REQUIRE(y < 10);
    }
  }
  SECTION("rate 1 moves every label, uniformly over the other classes") {
    const NoisyLabels n = apply_symmetric_noise(clean, 10, 1.0, 8);
    CHECK(n.realised_rate == 1.0);
    std::vector<std::vector<std::int64_t>> counts(10, std::vector<std::int64_t>(10, 0));
    for (std::size_t i = 0; i < clean.size(); ++i) {
      REQUIRE(n.labels[i] != clean[i]);
      ++counts[static_cast<std::size_t>(clean[i])][static_cast<std::size_t>(n.labels[i])];
    }
    // 2,000 samples per class spread over 9 classes: about 222 each.
    for (std::size_t a = 0; a < 10; ++a) {
      CHECK(counts[a][a] == 0);
      for (std::size_t b = 0; b < 10; ++b) {
        if (a == b) continue;
        CHECK(counts[a][b] > 160);
        CHECK(counts[a][b] < 290);
      }
    }
  }
  SECTION("deterministic given the seed") {
    const NoisyLabels a = apply_symmetric_noise(clean, 10, 0.4, 11);
    const NoisyLabels b = apply_symmetric_noise(clean, 10, 0.4, 11);
    const NoisyLabels c = apply_symmetric_noise(clean, 10, 0.4, 12);
    CHECK(a.labels == b.labels);
    CHECK(count_differences(a.labels, c.labels) > 4000);
    CHECK(apply_symmetric_noise(clean, 10, 0.0, 11).labels == clean);
    // Two classes: a flip always goes to the other one.
    const NoisyLabels binary = apply_symmetric_noise({0, 1, 0, 1}, 2, 1.0, 1);
    CHECK(binary.labels == std::vector<std::int64_t>{1, 0, 1, 0});
  }
  SECTION("invalid arguments") {
    using Catch::Contains;
    REQUIRE_THROWS_WITH(apply_symmetric_noise(clean, 10, 1.5, 0), Contains("rate = 1.5"));
    REQUIRE_THROWS_WITH(apply_symmetric_noise({0, 3}, 3, 0.1, 0), Contains("label 3 at sample 1"));
    REQUIRE_THROWS_WITH(apply_symmetric_noise({0, 0}, 1, 0.1, 0), Contains("num_classes = 1"));
  }
}

TEST_CASE("instance-dependent noise", "[data][label_noise]") {
  const Dataset d = random_dataset(20000, 10, 1);
  const Normalization norm{{0.5f}, {0.25f}};
  const NoisyLabels n = apply_instance_noise(d, norm, 0.3, 5);
  CHECK(n.kind == "instance");
  CHECK(n.num_classes == 10);
  CHECK(n.clean_labels == d.labels);
  // Mean flip rate: N(0.3, 0.1^2) truncated to [0, 1] has mean 0.3 (to 1e-4).
  CHECK(n.realised_rate == Approx(0.3).margin(0.02));
  CHECK(n.realised_rate ==
        Approx(static_cast<double>(count_differences(n.labels, d.labels)) / 20000.0));

  SECTION("deterministic given the seed") {
    CHECK(apply_instance_noise(d, norm, 0.3, 5).labels == n.labels);
    CHECK(count_differences(apply_instance_noise(d, norm, 0.3, 6).labels, n.labels) > 2000);
  }
  SECTION("the flips follow the images") {
    // Same labels and seed, other pixels: the same flip rates q_i and uniforms, but other
    // projections x_i^T W, so other targets.
    const Dataset other = random_dataset(20000, 10, 2);
    REQUIRE(other.labels == d.labels);
    const NoisyLabels m = apply_instance_noise(other, norm, 0.3, 5);
    std::int64_t both_flipped = 0, other_target = 0;
    for (std::size_t i = 0; i < m.labels.size(); ++i) {
      if (m.labels[i] != d.labels[i] && n.labels[i] != d.labels[i]) {
        ++both_flipped;
        other_target += m.labels[i] != n.labels[i];
      }
    }
    CHECK(both_flipped > 3000);
    CHECK(other_target > both_flipped / 2);
    // q_i = 1 (rate 1, no spread) moves every label, whatever the image.
    Dataset twins = random_dataset(2, 10, 3);
    twins.labels = {4, 4};
    std::copy(twins.image(0), twins.image(0) + 16, twins.pixels.begin() + 16);
    const NoisyLabels t = apply_instance_noise(twins, norm, 1.0, 9, 0.0);
    CHECK(t.labels[0] != 4);
    CHECK(t.labels[1] != 4);
    CHECK(t.realised_rate == 1.0);
  }
  SECTION("rate 0 keeps every label; invalid arguments throw") {
    CHECK(apply_instance_noise(d, norm, 0.0, 5, 0.0).labels == d.labels);
    using Catch::Contains;
    REQUIRE_THROWS_WITH(apply_instance_noise(d, norm, -0.1, 5), Contains("rate = -0.1"));
    REQUIRE_THROWS_WITH(apply_instance_noise(d, Normalization{{0.5f, 0.5f}, {1, 1}}, 0.1, 5),
                        Contains("apply_instance_noise") && Contains("expected 1"));
  }
}

TEST_CASE("noisy labels round-trip through the run directory", "[data][label_noise]") {
  const auto dir = scratch_dir();
  const std::string path = (dir / "label_noise.safetensors").string();
  const NoisyLabels n =
      apply_symmetric_noise(balanced_labels(1000, 7), 7, 0.35, 0xfedcba9876543210ULL);
  save_noisy_labels(path, n);
  const NoisyLabels back = load_noisy_labels(path);
  CHECK(back.kind == n.kind);
  CHECK(back.num_classes == 7);
  CHECK(back.rate == n.rate);
  CHECK(back.realised_rate == n.realised_rate);
  CHECK(back.seed == 0xfedcba9876543210ULL);
  CHECK(back.labels == n.labels);
  CHECK(back.clean_labels == n.clean_labels);

  using Catch::Contains;
  NoisyLabels bad = n;
  bad.num_classes = 3;  // labels up to 6 no longer fit
  save_noisy_labels(path, bad);
  REQUIRE_THROWS_WITH(load_noisy_labels(path), Contains(path) && Contains("outside [0, 3)"));
  mcd::save_safetensors(path, {{"labels", mcd::Tensor::from_vector(n.labels, {1000})}},
                        {{"kind", "symmetric"}});
  REQUIRE_THROWS_WITH(load_noisy_labels(path), Contains("lacks metadata field 'num_classes'"));
  std::filesystem::remove_all(dir);
}
