// The augmentation pipeline: each step on small synthetic images, the released CIFAR recipe
// in its order (cutout after normalisation), option validation, and determinism of the draws
// with respect to batch size and threading.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <mcd/data/augment.h>
#include <mcd/data/loader.h>
#include <mcd/engine/generator.h>
#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd::data;

namespace {

Dataset random_dataset(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                       std::uint64_t seed) {
  return mcd::testing::random_dataset(n, c, h, w, 3, seed,
                                      [](std::int64_t i, mcd::Generator&) { return i % 3; });
}

using mcd::testing::iota;

// Every augmentation at once, on 3-channel images.
Augmentation full_augmentation() {
  Augmentation aug;
  aug.horizontal_flip = true;
  aug.resized_crop.enabled = true;
  aug.resized_crop.scale_min = 0.3;
  aug.color_jitter = ColorJitter{0.4, 0.4, 0.4};
  aug.cutout = Cutout{2, 3};
  return aug;
}

std::vector<float> as_floats(const std::vector<std::uint8_t>& v) {
  return std::vector<float>(v.begin(), v.end());
}

}  // namespace

TEST_CASE("draws depend only on (seed, epoch, position)", "[data][augment]") {
  const Augmentation aug = full_augmentation();
  const SampleAugmentation a = draw_sample_augmentation(aug, 8, 10, 7, 3, 11);
  const SampleAugmentation b = draw_sample_augmentation(aug, 8, 10, 7, 3, 11);
  CHECK(a.window.top == b.window.top);
  CHECK(a.window.left == b.window.left);
  CHECK(a.window.height == b.window.height);
  CHECK(a.window.width == b.window.width);
  CHECK(a.crop.flip == b.crop.flip);
  CHECK(a.brightness == b.brightness);
  CHECK(a.contrast == b.contrast);
  CHECK(a.saturation == b.saturation);
  CHECK(a.hole_centres == b.hole_centres);
  REQUIRE(a.hole_centres.size() == 4);
  int differ = 0, flips = 0;
  for (std::int64_t p = 0; p < 200; ++p) {
    const SampleAugmentation s = draw_sample_augmentation(aug, 8, 10, 7, 3, p);
    const SampleAugmentation e = draw_sample_augmentation(aug, 8, 10, 7, 4, p);
    differ += s.brightness != e.brightness;
    flips += s.crop.flip;
    CHECK(s.resized);
    CHECK(s.window.top >= 0);
    CHECK(s.window.left >= 0);
    CHECK(s.window.top + s.window.height <= 8);
    CHECK(s.window.left + s.window.width <= 10);
    for (float f : {s.brightness, s.contrast, s.saturation}) {
      CHECK(f >= 0.6f);
      CHECK(f <= 1.4f);
    }
    for (std::size_t h = 0; h < s.hole_centres.size(); h += 2) {
      CHECK(s.hole_centres[h] >= 0);
      CHECK(s.hole_centres[h] < 8);
      CHECK(s.hole_centres[h + 1] >= 0);
      CHECK(s.hole_centres[h + 1] < 10);
    }
  }
  CHECK(differ > 190);
  CHECK(flips > 70);
  CHECK(flips < 130);
  // Without resized crop the crop/flip draws are the ones of draw_augmentation, whatever else
  // is enabled (they come first in the sequence).
  Augmentation crop = full_augmentation();
  crop.resized_crop.enabled = false;
  crop.crop_padding = 3;
  for (std::int64_t p = 0; p < 20; ++p) {
    const AugmentDraw legacy = draw_augmentation(Augmentation(3, true), 1, 2, p);
    const SampleAugmentation s = draw_sample_augmentation(crop, 8, 10, 1, 2, p);
    CHECK(s.crop.offset_y == legacy.offset_y);
    CHECK(s.crop.offset_x == legacy.offset_x);
    CHECK(s.crop.flip == legacy.flip);
  }
}

TEST_CASE("augmented batches do not depend on batch size or threading", "[data][augment]") {
  const Dataset d = random_dataset(23, 3, 8, 10, 1);
  LoaderOptions opt;
  opt.seed = 5;
  opt.augmentation = full_augmentation();
  opt.normalization = Normalization{{0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.3f}};
  const AugmentPipeline pipeline(opt.augmentation, opt.normalization, 3, 8, 10);
  std::vector<std::vector<double>> per_size[2];
  for (std::int64_t batch_size : {4, 9}) {
    opt.batch_size = batch_size;
    BatchIterator it(d, iota(23), opt);
    it.start_epoch(1);
    std::vector<std::vector<double>> samples;
    std::int64_t position = 0;
    for (std::int64_t b = 0; b < it.batches_per_epoch(); ++b) {
      const Batch threaded = it.batch(b, true);
      const Batch single = it.batch(b, false);
      const std::vector<double> img = threaded.images.to_doubles();
      REQUIRE(img == single.images.to_doubles());
      for (std::size_t i = 0; i < threaded.indices.size(); ++i, ++position) {
        // The batch holds exactly what the pipeline gives for the sample's position.
        std::vector<float> want(240);
        AugmentScratch scratch;
        pipeline.apply(d.image(threaded.indices[i]), pipeline.draw(5, 1, position), want.data(),
                       scratch);
        std::vector<double> got(img.begin() + static_cast<long>(i) * 240,
                                img.begin() + static_cast<long>(i + 1) * 240);
        REQUIRE(got == std::vector<double>(want.begin(), want.end()));
        samples.push_back(got);
      }
    }
    per_size[batch_size == 4 ? 0 : 1] = samples;
  }
  CHECK(per_size[0] == per_size[1]);
}

TEST_CASE("resized crop", "[data][augment]") {
  SECTION("scale (1, 1) and ratio (1, 1) is the identity on square images") {
    const Dataset d = random_dataset(4, 3, 9, 9, 2);
    Augmentation aug;
    aug.resized_crop = ResizedCrop{true, 1.0, 1.0, 1.0, 1.0};
    const AugmentPipeline pipeline(aug, Normalization{}, 3, 9, 9);
    for (std::int64_t i = 0; i < 4; ++i) {
      const SampleAugmentation s = pipeline.draw(3, 0, i);
      CHECK(s.window.top == 0);
      CHECK(s.window.left == 0);
      CHECK(s.window.height == 9);
      CHECK(s.window.width == 9);
      std::vector<float> out(243);
      AugmentScratch scratch;
      pipeline.apply(d.image(i), s, out.data(), scratch);
      for (std::size_t k = 0; k < out.size(); ++k)
        REQUIRE(out[k] * 255.0f == Approx(d.image(i)[k]).margin(1e-4));
    }
  }
  SECTION("impossible windows fall back to the centred crop, as torchvision") {
    mcd::Generator gen(1);
    const CropWindow w = draw_resized_crop(gen, 4, 6, ResizedCrop{true, 1.0, 1.0, 1.0, 1.0});
    CHECK(w.top == 0);
    CHECK(w.left == 1);
    CHECK(w.height == 4);
    CHECK(w.width == 4);
    const CropWindow tall = draw_resized_crop(gen, 6, 4, ResizedCrop{true, 1.0, 1.0, 1.0, 1.0});
    CHECK(tall.top == 1);
    CHECK(tall.left == 0);
    CHECK(tall.height == 4);
    CHECK(tall.width == 4);
  }
  SECTION("windows follow the scale and ratio ranges") {
    mcd::Generator gen(9);
    const ResizedCrop rc{true, 0.25, 0.5, 0.5, 2.0};
    double min_area = 1, max_area = 0;
    for (int k = 0; k < 500; ++k) {
      const CropWindow w = draw_resized_crop(gen, 64, 64, rc);
      REQUIRE(w.top + w.height <= 64);
      REQUIRE(w.left + w.width <= 64);
      const double area = static_cast<double>(w.height * w.width) / (64.0 * 64.0);
      const double ratio = static_cast<double>(w.width) / static_cast<double>(w.height);
      min_area = std::min(min_area, area);
      max_area = std::max(max_area, area);
      // Rounding the sides to whole pixels moves area and ratio a little.
      CHECK(area > 0.23);
      CHECK(area < 0.53);
      CHECK(ratio > 0.45);
      CHECK(ratio < 2.2);
    }
    CHECK(min_area < 0.28);
    CHECK(max_area > 0.47);
  }
  SECTION("bilinear upsampling with half-pixel centres") {
    // One channel, 4x4 image; the 2x2 window at (1, 2) is resized to 4x4. Source coordinates
    // of the outputs along each axis: 0 (clamped), 0.25, 0.75, 1 (clamped at the last pixel).
    std::vector<std::uint8_t> img(16);
    for (std::size_t k = 0; k < 16; ++k)
      img[k] = static_cast<std::uint8_t>(10 * k);
    std::vector<float> out(16);
    resized_crop_bilinear(img.data(), out.data(), 1, 4, 4, CropWindow{1, 2, 2, 2});
    const double a = 60, b = 70, c = 100, e = 110;  // the window's pixels
    const double f[4] = {0.0, 0.25, 0.75, 1.0};
    for (int y = 0; y < 4; ++y) {
      for (int x = 0; x < 4; ++x) {
        const double top = (1 - f[x]) * a + f[x] * b, bottom = (1 - f[x]) * c + f[x] * e;
        REQUIRE(out[static_cast<std::size_t>(4 * y + x)] ==
                Approx((1 - f[y]) * top + f[y] * bottom).margin(1e-4));
      }
    }
    REQUIRE_THROWS_WITH(
        resized_crop_bilinear(img.data(), out.data(), 1, 4, 4, CropWindow{3, 0, 2, 2}),
        Catch::Contains("outside the 4x4 image"));
  }
}

TEST_CASE("colour jitter steps", "[data][augment]") {
  const Dataset d = random_dataset(1, 3, 5, 6, 3);
  const std::vector<float> original = as_floats(d.pixels);
  const std::int64_t plane = 30;
  SECTION("brightness") {
    std::vector<float> v = original;
    adjust_brightness(v.data(), 3, plane, 1.0f);
    CHECK(v == original);
    adjust_brightness(v.data(), 3, plane, 0.5f);
    for (std::size_t k = 0; k < v.size(); ++k)
      REQUIRE(v[k] == Approx(0.5 * original[k]));
    v = original;
    adjust_brightness(v.data(), 3, plane, 3.0f);
    for (std::size_t k = 0; k < v.size(); ++k)
      REQUIRE(v[k] == Approx(std::min(255.0, 3.0 * original[k])));
  }
  SECTION("contrast blends with the mean grey level") {
    std::vector<float> v = original;
    adjust_contrast(v.data(), 3, plane, 1.0f);
    CHECK(v == original);
    double mean = 0;
    for (std::int64_t k = 0; k < plane; ++k)
      mean += 0.2989 * original[static_cast<std::size_t>(k)] +
              0.587 * original[static_cast<std::size_t>(plane + k)] +
              0.114 * original[static_cast<std::size_t>(2 * plane + k)];
    mean /= static_cast<double>(plane);
    adjust_contrast(v.data(), 3, plane, 0.0f);
    for (float x : v)
      REQUIRE(x == Approx(mean).epsilon(1e-5));
    v = original;
    adjust_contrast(v.data(), 3, plane, 0.5f);
    for (std::size_t k = 0; k < v.size(); ++k)
      REQUIRE(v[k] == Approx(0.5 * original[k] + 0.5 * mean).epsilon(1e-5));
  }
  SECTION("saturation blends with each pixel's grey level") {
    std::vector<float> v = original;
    adjust_saturation(v.data(), 3, plane, 1.0f);
    CHECK(v == original);
    adjust_saturation(v.data(), 3, plane, 0.0f);
    for (std::int64_t k = 0; k < plane; ++k) {
      const auto u = static_cast<std::size_t>(k);
      const double grey =
          0.2989 * original[u] + 0.587 * original[u + 30] + 0.114 * original[u + 60];
      for (std::size_t c = 0; c < 3; ++c)
        REQUIRE(v[u + 30 * c] == Approx(grey).epsilon(1e-5));
    }
    // Grey images are left unchanged.
    std::vector<float> g(original.begin(), original.begin() + plane);
    adjust_saturation(g.data(), 1, plane, 0.2f);
    CHECK(g == std::vector<float>(original.begin(), original.begin() + plane));
  }
  SECTION("the pipeline applies brightness, then contrast, then saturation, then normalises") {
    Augmentation aug;
    aug.color_jitter = ColorJitter{0.5, 0.5, 0.5};
    const Normalization norm{{0.1f, 0.2f, 0.3f}, {0.5f, 0.6f, 0.7f}};
    const AugmentPipeline pipeline(aug, norm, 3, 5, 6);
    const SampleAugmentation s = pipeline.draw(4, 0, 2);
    CHECK(s.brightness != 1.0f);
    CHECK(s.contrast != 1.0f);
    CHECK(s.saturation != 1.0f);
    std::vector<float> want = original;
    adjust_brightness(want.data(), 3, plane, s.brightness);
    adjust_contrast(want.data(), 3, plane, s.contrast);
    adjust_saturation(want.data(), 3, plane, s.saturation);
    std::vector<float> got(90);
    AugmentScratch scratch;
    pipeline.apply(d.image(0), s, got.data(), scratch);
    for (std::size_t k = 0; k < 90; ++k) {
      const std::size_t c = k / 30;
      REQUIRE(got[k] == Approx((want[k] / 255.0 - norm.mean[c]) / norm.std[c]).margin(1e-5));
    }
  }
}

TEST_CASE("cutout zeroes exactly the clipped square", "[data][augment]") {
  const std::int64_t c = 2, h = 7, w = 9;
  for (const auto& [length, cy, cx] :
       {std::array<std::int64_t, 3>{4, 1, 8}, std::array<std::int64_t, 3>{4, 3, 4},
        std::array<std::int64_t, 3>{5, 6, 0}, std::array<std::int64_t, 3>{20, 3, 3}}) {
    std::vector<float> img(static_cast<std::size_t>(c * h * w), 1.5f);
    apply_cutout(img.data(), c, h, w, length, cy, cx);
    // The reference code's mask: rows clip(cy - L//2, 0, H) to clip(cy + L//2, 0, H).
    const std::int64_t half = length / 2;
    for (std::int64_t ch = 0; ch < c; ++ch) {
      for (std::int64_t y = 0; y < h; ++y) {
        for (std::int64_t x = 0; x < w; ++x) {
          const bool hole = y >= cy - half && y < cy + half && x >= cx - half && x < cx + half;
          INFO("length " << length << " centre (" << cy << ", " << cx << ") pixel (" << y << ", "
                         << x << ")");
          REQUIRE(img[static_cast<std::size_t>((ch * h + y) * w + x)] == (hole ? 0.0f : 1.5f));
        }
      }
    }
  }
}

TEST_CASE("the released CIFAR recipe: crop 4, flip, normalise, then cutout", "[data][augment]") {
  const Augmentation aug = cifar_augmentation();
  CHECK(aug.crop_padding == 4);
  CHECK(aug.horizontal_flip);
  CHECK_FALSE(aug.resized_crop.enabled);
  CHECK_FALSE(aug.color_jitter.enabled());
  CHECK(aug.cutout.n_holes == 1);
  CHECK(aug.cutout.length == 16);
  const Normalization norm = cifar100_normalization();
  REQUIRE(norm.mean.size() == 3);
  CHECK(norm.mean[0] == Approx(129.3 / 255));
  CHECK(norm.mean[2] == Approx(112.4 / 255));
  CHECK(norm.std[1] == Approx(65.4 / 255));

  const Dataset d = random_dataset(40, 3, 32, 32, 4);
  LoaderOptions opt;
  opt.batch_size = 16;
  opt.seed = 21;
  opt.augmentation = aug;
  opt.normalization = norm;
  BatchIterator it(d, iota(40), opt);
  std::int64_t position = 0, padded_seen = 0;
  Batch b;
  while (it.next(b)) {
    const std::vector<double> img = b.images.to_doubles();
    for (std::size_t i = 0; i < b.indices.size(); ++i, ++position) {
      const SampleAugmentation s = draw_sample_augmentation(aug, 32, 32, 21, 0, position);
      const AugmentDraw crop = draw_augmentation(aug, 21, 0, position);
      REQUIRE(s.crop.offset_y == crop.offset_y);
      REQUIRE(s.crop.flip == crop.flip);
      std::vector<std::uint8_t> cropped(3072);
      augment_image(d.image(b.indices[i]), cropped.data(), 3, 32, 32, 4, crop);
      REQUIRE(s.hole_centres.size() == 2);
      const std::int64_t cy = s.hole_centres[0], cx = s.hole_centres[1];
      for (std::int64_t c = 0; c < 3; ++c) {
        const auto cu = static_cast<std::size_t>(c);
        for (std::int64_t y = 0; y < 32; ++y) {
          for (std::int64_t x = 0; x < 32; ++x) {
            const std::int64_t k = (c * 32 + y) * 32 + x;
            const double got = img[i * 3072 + static_cast<std::size_t>(k)];
            if (y >= cy - 8 && y < cy + 8 && x >= cx - 8 && x < cx + 8) {
              // Cutout comes after normalisation: the hole is 0, not the normalised black.
              REQUIRE(got == 0.0);
              continue;
            }
            const double pixel = cropped[static_cast<std::size_t>(k)];
            REQUIRE(got == Approx((pixel / 255.0 - norm.mean[cu]) / norm.std[cu]).margin(1e-5));
            if (pixel == 0 && (y < crop.offset_y - 4 || y >= 32 + crop.offset_y - 4)) {
              // Padding happens before normalisation: padded pixels are normalised black.
              REQUIRE(got == Approx(-norm.mean[cu] / norm.std[cu]).margin(1e-5));
              ++padded_seen;
            }
          }
        }
      }
    }
  }
  CHECK(padded_seen > 0);
}

TEST_CASE("augmentation options are validated", "[data][augment]") {
  using Catch::Contains;
  const Normalization none;
  Augmentation both;
  both.crop_padding = 2;
  both.resized_crop.enabled = true;
  REQUIRE_THROWS_WITH(AugmentPipeline(both, none, 3, 8, 8),
                      Contains("resized_crop") && Contains("choose one"));
  Augmentation scale;
  scale.resized_crop = ResizedCrop{true, 0.0, 1.0, 0.75, 1.33};
  REQUIRE_THROWS_WITH(AugmentPipeline(scale, none, 3, 8, 8), Contains("scale range [0, 1]"));
  Augmentation ratio;
  ratio.resized_crop = ResizedCrop{true, 0.5, 1.0, 2.0, 1.0};
  REQUIRE_THROWS_WITH(AugmentPipeline(ratio, none, 3, 8, 8), Contains("ratio range [2, 1]"));
  Augmentation jitter;
  jitter.color_jitter.brightness = -0.1;
  REQUIRE_THROWS_WITH(AugmentPipeline(jitter, none, 3, 8, 8),
                      Contains("color_jitter.brightness = -0.1"));
  jitter.color_jitter = ColorJitter{0.2, 0.2, 0.0};
  REQUIRE_THROWS_WITH(AugmentPipeline(jitter, none, 2, 8, 8), Contains("have 2"));
  Augmentation holes;
  holes.cutout = Cutout{1, 0};
  REQUIRE_THROWS_WITH(AugmentPipeline(holes, none, 3, 8, 8), Contains("cutout n_holes = 1"));
  // The loader validates at construction, naming itself.
  const Dataset d = random_dataset(4, 3, 8, 8, 5);
  LoaderOptions opt;
  opt.augmentation = both;
  REQUIRE_THROWS_WITH(BatchIterator(d, iota(4), opt),
                      Contains("BatchIterator") && Contains("choose one"));
  // Validation and test batches are never augmented.
  const Batch plain = make_batch(d, {1}, none);
  const std::vector<double> v = plain.images.to_doubles();
  for (std::size_t k = 0; k < v.size(); ++k)
    REQUIRE(v[k] * 255.0 == Approx(d.image(1)[k]).margin(1e-4));
}
