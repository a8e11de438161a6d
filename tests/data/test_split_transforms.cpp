// Train/validation splits, channel statistics and the crop/flip augmentation on images with
// known content.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include <mcd/data/split.h>
#include <mcd/data/transforms.h>
#include <mcd/engine/generator.h>

using namespace mcd::data;

namespace {

Dataset random_dataset(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                       std::uint64_t seed) {
  Dataset d;
  d.name = "random";
  d.channels = c;
  d.height = h;
  d.width = w;
  d.num_classes = 3;
  mcd::Generator gen(seed);
  d.pixels.resize(static_cast<std::size_t>(n * c * h * w));
  // Channel c is biased by 60 * c so that the per-channel statistics differ.
  for (std::size_t i = 0; i < d.pixels.size(); ++i) {
    const auto ch = static_cast<std::int64_t>(i / static_cast<std::size_t>(h * w)) % c;
    d.pixels[i] = static_cast<std::uint8_t>(gen.below(120) + static_cast<std::uint64_t>(60 * ch));
  }
  for (std::int64_t i = 0; i < n; ++i)
    d.labels.push_back(i % 3);
  return d;
}

}  // namespace

TEST_CASE("train_val_split is disjoint, complete, sorted, seeded and sized", "[data][split]") {
  const Split s = train_val_split(1000, 0.1, 7);
  CHECK(s.val.size() == 100);
  CHECK(s.train.size() == 900);
  CHECK(std::is_sorted(s.val.begin(), s.val.end()));
  CHECK(std::is_sorted(s.train.begin(), s.train.end()));
  std::vector<std::int64_t> all(s.train);
  all.insert(all.end(), s.val.begin(), s.val.end());
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> expected(1000);
  for (std::int64_t i = 0; i < 1000; ++i)
    expected[static_cast<std::size_t>(i)] = i;
  CHECK(all == expected);  // disjoint and complete at once

  const Split same = train_val_split(1000, 0.1, 7);
  CHECK(same.val == s.val);
  CHECK(same.train == s.train);
  const Split other = train_val_split(1000, 0.1, 8);
  CHECK(other.val.size() == 100);
  CHECK(other.val != s.val);
  // Not simply the first or last indices.
  CHECK(s.val.front() < 900);
  CHECK(s.val.back() >= 100);

  CHECK(train_val_split(1000, 0.0, 1).val.empty());
  CHECK(train_val_split(1000, 0.0, 1).train.size() == 1000);
  CHECK(train_val_split(999, 0.25, 1).val.size() == 250);  // round(249.75)
  CHECK(train_val_split(1, 0.9, 1).train.size() == 1);     // the training part stays non-empty
  CHECK(train_val_split(0, 0.5, 1).train.empty());
  REQUIRE_THROWS_WITH(train_val_split(10, 1.0, 1), Catch::Contains("val_fraction = 1"));
  REQUIRE_THROWS_WITH(train_val_split(10, -0.1, 1), Catch::Contains("val_fraction"));
}

TEST_CASE("channel_statistics matches a direct computation", "[data][transforms]") {
  const Dataset d = random_dataset(50, 3, 5, 4, 11);
  std::vector<std::int64_t> idx;
  for (std::int64_t i = 0; i < 50; i += 3)
    idx.push_back(i);
  const Normalization norm = channel_statistics(d, idx);
  REQUIRE(norm.mean.size() == 3);
  REQUIRE(norm.std.size() == 3);
  for (std::int64_t c = 0; c < 3; ++c) {
    double s = 0, count = 0;
    for (std::int64_t i : idx) {
      for (std::int64_t k = 0; k < 20; ++k) {
        s += d.pixels[static_cast<std::size_t>((i * 3 + c) * 20 + k)] / 255.0;
        count += 1;
      }
    }
    const double mean = s / count;
    double ss = 0;
    for (std::int64_t i : idx) {
      for (std::int64_t k = 0; k < 20; ++k) {
        const double v = d.pixels[static_cast<std::size_t>((i * 3 + c) * 20 + k)] / 255.0;
        ss += (v - mean) * (v - mean);
      }
    }
    const double sd = std::sqrt(ss / count);
    INFO("channel " << c);
    CHECK(norm.mean[static_cast<std::size_t>(c)] == Approx(mean).epsilon(1e-6));
    CHECK(norm.std[static_cast<std::size_t>(c)] == Approx(sd).epsilon(1e-5));
  }
  // The channel bias of 60 shows in the means.
  CHECK(norm.mean[1] - norm.mean[0] == Approx(60.0 / 255).margin(15.0 / 255));

  Dataset constant = random_dataset(2, 1, 2, 2, 1);
  std::fill(constant.pixels.begin(), constant.pixels.end(), std::uint8_t{51});
  const Normalization cn = channel_statistics(constant, {0, 1});
  CHECK(cn.mean[0] == Approx(0.2));
  CHECK(cn.std[0] == 0.0f);

  REQUIRE_THROWS_WITH(channel_statistics(d, {0, 50}),
                      Catch::Contains("channel_statistics") && Catch::Contains("index 50"));
  REQUIRE_THROWS_WITH(channel_statistics(d, {}), Catch::Contains("no indices"));
}

TEST_CASE("augment_image crops with padding and flips", "[data][transforms]") {
  // One 3x3 channel holding 1..9 row by row.
  const std::vector<std::uint8_t> img = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<std::uint8_t> out(9);
  auto run = [&](std::int64_t padding, std::int64_t oy, std::int64_t ox, bool flip) {
    augment_image(img.data(), out.data(), 1, 3, 3, padding, AugmentDraw{oy, ox, flip});
    return out;
  };
  using V = std::vector<std::uint8_t>;
  CHECK(run(0, 0, 0, false) == img);                           // padding 0: identity
  CHECK(run(2, 2, 2, false) == img);                           // centred window: identity
  CHECK(run(0, 0, 0, true) == V{3, 2, 1, 6, 5, 4, 9, 8, 7});   // mirror
  CHECK(run(1, 0, 0, false) == V{0, 0, 0, 0, 1, 2, 0, 4, 5});  // content moves down-right
  CHECK(run(1, 2, 1, false) == V{4, 5, 6, 7, 8, 9, 0, 0, 0});  // content moves up
  CHECK(run(1, 1, 2, true) == V{0, 3, 2, 0, 6, 5, 0, 9, 8});   // crop, then mirror
  CHECK(run(3, 0, 6, false) == V(9, 0));                       // window entirely in padding
  REQUIRE_THROWS_WITH(run(1, 3, 0, false), Catch::Contains("augment_image"));

  // Several channels, non-square: every output pixel is the shifted source or zero.
  const Dataset d = random_dataset(1, 2, 4, 6, 3);
  std::vector<std::uint8_t> dst(48);
  const std::int64_t p = 2;
  for (std::int64_t oy = 0; oy <= 2 * p; ++oy) {
    for (std::int64_t ox = 0; ox <= 2 * p; ++ox) {
      for (bool flip : {false, true}) {
        augment_image(d.image(0), dst.data(), 2, 4, 6, p, AugmentDraw{oy, ox, flip});
        for (std::int64_t c = 0; c < 2; ++c) {
          for (std::int64_t y = 0; y < 4; ++y) {
            for (std::int64_t x = 0; x < 6; ++x) {
              const std::int64_t sy = y + oy - p;
              const std::int64_t sx = (flip ? 5 - x : x) + ox - p;
              const bool inside = sy >= 0 && sy < 4 && sx >= 0 && sx < 6;
              const int want = inside ? d.image(0)[(c * 4 + sy) * 6 + sx] : 0;
              INFO("oy " << oy << " ox " << ox << " flip " << flip << " at " << c << "," << y << ","
                         << x);
              REQUIRE(int(dst[static_cast<std::size_t>((c * 4 + y) * 6 + x)]) == want);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("draw_augmentation is seeded by (seed, epoch, position)", "[data][transforms]") {
  const Augmentation aug{3, true};
  std::set<std::int64_t> ys, xs;
  int flips = 0;
  const int n = 4000;
  for (int k = 0; k < n; ++k) {
    const AugmentDraw a = draw_augmentation(aug, 5, 2, k);
    const AugmentDraw b = draw_augmentation(aug, 5, 2, k);
    REQUIRE(a.offset_y == b.offset_y);
    REQUIRE(a.offset_x == b.offset_x);
    REQUIRE(a.flip == b.flip);
    REQUIRE(a.offset_y >= 0);
    REQUIRE(a.offset_y <= 6);
    REQUIRE(a.offset_x >= 0);
    REQUIRE(a.offset_x <= 6);
    ys.insert(a.offset_y);
    xs.insert(a.offset_x);
    flips += a.flip;
  }
  CHECK(ys.size() == 7);
  CHECK(xs.size() == 7);
  CHECK(flips > n * 0.45);
  CHECK(flips < n * 0.55);
  // Other epochs and seeds give other draws.
  int differ_epoch = 0, differ_seed = 0;
  for (int k = 0; k < 100; ++k) {
    const AugmentDraw a = draw_augmentation(aug, 5, 2, k);
    const AugmentDraw e = draw_augmentation(aug, 5, 3, k);
    const AugmentDraw s = draw_augmentation(aug, 6, 2, k);
    differ_epoch += a.offset_y != e.offset_y || a.offset_x != e.offset_x || a.flip != e.flip;
    differ_seed += a.offset_y != s.offset_y || a.offset_x != s.offset_x || a.flip != s.flip;
  }
  CHECK(differ_epoch > 80);
  CHECK(differ_seed > 80);

  const AugmentDraw none = draw_augmentation(Augmentation{}, 5, 2, 9);
  CHECK(none.offset_y == 0);
  CHECK(none.offset_x == 0);
  CHECK_FALSE(none.flip);
  const AugmentDraw crop_only = draw_augmentation(Augmentation{2, false}, 5, 2, 9);
  CHECK_FALSE(crop_only.flip);
}
