// The augmentation pipeline's draws and steps. Without resized crop and jitter the image stays
// uint8 until normalisation (pixel * scale + bias); otherwise it is carried as float pixel
// values, which are exactly the uint8 values until a resize or jitter changes them, so both
// paths give identical results where they overlap.
#include <mcd/data/augment.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <mcd/engine/error.h>

#include "seeding.h"

namespace mcd::data {

CropWindow draw_resized_crop(Generator& gen, std::int64_t height, std::int64_t width,
                             const ResizedCrop& options) {
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(options.ratio_min), log_hi = std::log(options.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area =
        area * (options.scale_min + (options.scale_max - options.scale_min) * gen.uniform());
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * gen.uniform());
    // Python's round() rounds half to even, as nearbyint does in the default rounding mode.
    const auto w = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const auto h = static_cast<std::int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropWindow win;
      win.height = h;
      win.width = w;
      win.top = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(height - h + 1)));
      win.left = static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(width - w + 1)));
      return win;
    }
  }
  // torchvision's fallback: the largest centred window whose ratio is inside the range.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  CropWindow win{0, 0, height, width};
  if (in_ratio < options.ratio_min) {
    win.height =
        static_cast<std::int64_t>(std::nearbyint(static_cast<double>(width) / options.ratio_min));
  } else if (in_ratio > options.ratio_max) {
    win.width =
        static_cast<std::int64_t>(std::nearbyint(static_cast<double>(height) * options.ratio_max));
  }
  win.top = (height - win.height) / 2;
  win.left = (width - win.width) / 2;
  return win;
}

SampleAugmentation draw_sample_augmentation(const Augmentation& aug, std::int64_t height,
                                            std::int64_t width, std::uint64_t seed,
                                            std::int64_t epoch, std::int64_t position) {
  SampleAugmentation s;
  s.crop.offset_y = s.crop.offset_x = aug.crop_padding;
  if (!aug.enabled()) return s;
  Generator gen(detail::derive_seed(seed, detail::SeedStream::Augment, epoch, position));
  if (aug.resized_crop.enabled) {
    s.resized = true;
    s.window = draw_resized_crop(gen, height, width, aug.resized_crop);
  } else if (aug.crop_padding > 0) {
    const auto range = static_cast<std::uint64_t>(2 * aug.crop_padding + 1);
    s.crop.offset_y = static_cast<std::int64_t>(gen.below(range));
    s.crop.offset_x = static_cast<std::int64_t>(gen.below(range));
  }
  if (aug.horizontal_flip) s.crop.flip = gen.below(2) == 1;
  const auto factor = [&gen](double x) {
    if (x <= 0) return 1.0f;
    const double lo = std::max(0.0, 1.0 - x), hi = 1.0 + x;
    return static_cast<float>(lo + (hi - lo) * gen.uniform());
  };
  s.brightness = factor(aug.color_jitter.brightness);
  s.contrast = factor(aug.color_jitter.contrast);
  s.saturation = factor(aug.color_jitter.saturation);
  for (std::int64_t h = 0; h < aug.cutout.n_holes; ++h) {
    s.hole_centres.push_back(
        static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(height))));
    s.hole_centres.push_back(
        static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(width))));
  }
  return s;
}

void resized_crop_bilinear(const std::uint8_t* src, float* dst, std::int64_t channels,
                           std::int64_t height, std::int64_t width, const CropWindow& window) {
  MCD_CHECK(window.height > 0 && window.width > 0 && window.top >= 0 && window.left >= 0 &&
                window.top + window.height <= height && window.left + window.width <= width,
            "resized_crop_bilinear: window (top {}, left {}, {}x{}) outside the {}x{} image",
            window.top, window.left, window.height, window.width, height, width);
  // Source coordinate of output index i: (i + 0.5) * in / out - 0.5, clamped at 0, as in
  // PyTorch's upsample_bilinear2d; precomputed per row and per column.
  const auto axis = [](std::int64_t in, std::int64_t out, std::vector<std::int64_t>& i0,
                       std::vector<std::int64_t>& i1, std::vector<float>& frac) {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (std::int64_t i = 0; i < out; ++i) {
      const float s = std::max(0.0f, scale * (static_cast<float>(i) + 0.5f) - 0.5f);
      const auto lo = std::min(static_cast<std::int64_t>(s), in - 1);
      i0.push_back(lo);
      i1.push_back(std::min(lo + 1, in - 1));
      frac.push_back(s - static_cast<float>(lo));
    }
  };
  std::vector<std::int64_t> y0, y1, x0, x1;
  std::vector<float> fy, fx;
  axis(window.height, height, y0, y1, fy);
  axis(window.width, width, x0, x1, fx);
  for (std::int64_t c = 0; c < channels; ++c) {
    const std::uint8_t* plane = src + (c * height + window.top) * width + window.left;
    for (std::int64_t y = 0; y < height; ++y) {
      const auto yi = static_cast<std::size_t>(y);
      const std::uint8_t* r0 = plane + y0[yi] * width;
      const std::uint8_t* r1 = plane + y1[yi] * width;
      const float wy = fy[yi];
      float* out = dst + (c * height + y) * width;
      for (std::int64_t x = 0; x < width; ++x) {
        const auto xi = static_cast<std::size_t>(x);
        const float wx = fx[xi];
        const float top =
            (1.0f - wx) * static_cast<float>(r0[x0[xi]]) + wx * static_cast<float>(r0[x1[xi]]);
        const float bottom =
            (1.0f - wx) * static_cast<float>(r1[x0[xi]]) + wx * static_cast<float>(r1[x1[xi]]);
        out[x] = (1.0f - wy) * top + wy * bottom;
      }
    }
  }
}

void flip_horizontal(float* img, std::int64_t channels, std::int64_t height, std::int64_t width) {
  for (std::int64_t r = 0; r < channels * height; ++r)
    std::reverse(img + r * width, img + (r + 1) * width);
}

namespace {

constexpr float kMaxPixel = 255.0f;

// out = clamp(factor * img + (1 - factor) * other, 0, 255), torchvision's _blend.
inline float blend(float v, float other, float factor) {
  return std::clamp(factor * v + (1.0f - factor) * other, 0.0f, kMaxPixel);
}

inline float grey(const float* img, std::int64_t plane, std::int64_t k) {
  return 0.2989f * img[k] + 0.587f * img[plane + k] + 0.114f * img[2 * plane + k];
}

}  // namespace

void adjust_brightness(float* img, std::int64_t channels, std::int64_t plane, float factor) {
  const std::int64_t n = channels * plane;
  for (std::int64_t k = 0; k < n; ++k)
    img[k] = blend(img[k], 0.0f, factor);
}

void adjust_contrast(float* img, std::int64_t channels, std::int64_t plane, float factor) {
  MCD_CHECK(channels == 1 || channels == 3, "adjust_contrast: {} channels, expected 1 or 3",
            channels);
  double sum = 0;
  for (std::int64_t k = 0; k < plane; ++k)
    sum += channels == 3 ? grey(img, plane, k) : img[k];
  const auto mean = static_cast<float>(sum / static_cast<double>(plane));
  const std::int64_t n = channels * plane;
  for (std::int64_t k = 0; k < n; ++k)
    img[k] = blend(img[k], mean, factor);
}

void adjust_saturation(float* img, std::int64_t channels, std::int64_t plane, float factor) {
  MCD_CHECK(channels == 1 || channels == 3, "adjust_saturation: {} channels, expected 1 or 3",
            channels);
  if (channels == 1) return;  // torchvision leaves grey images unchanged
  for (std::int64_t k = 0; k < plane; ++k) {
    const float g = grey(img, plane, k);
    for (std::int64_t c = 0; c < 3; ++c)
      img[c * plane + k] = blend(img[c * plane + k], g, factor);
  }
}

void apply_cutout(float* img, std::int64_t channels, std::int64_t height, std::int64_t width,
                  std::int64_t length, std::int64_t centre_y, std::int64_t centre_x) {
  const std::int64_t y_lo = std::clamp<std::int64_t>(centre_y - length / 2, 0, height);
  const std::int64_t y_hi = std::clamp<std::int64_t>(centre_y + length / 2, 0, height);
  const std::int64_t x_lo = std::clamp<std::int64_t>(centre_x - length / 2, 0, width);
  const std::int64_t x_hi = std::clamp<std::int64_t>(centre_x + length / 2, 0, width);
  if (x_lo >= x_hi) return;
  for (std::int64_t c = 0; c < channels; ++c)
    for (std::int64_t y = y_lo; y < y_hi; ++y)
      std::fill(img + (c * height + y) * width + x_lo, img + (c * height + y) * width + x_hi, 0.0f);
}

AugmentPipeline::AugmentPipeline(const Augmentation& aug, const Normalization& norm,
                                 std::int64_t channels, std::int64_t height, std::int64_t width)
    : aug_(aug), channels_(channels), height_(height), width_(width) {
  MCD_CHECK(channels > 0 && height > 0 && width > 0,
            "AugmentPipeline: invalid image shape (C={}, H={}, W={})", channels, height, width);
  check_augmentation(aug, channels, "AugmentPipeline");
  check_normalization(norm, channels, "AugmentPipeline");
  for (std::int64_t c = 0; c < channels; ++c) {
    const double mean = norm.mean.empty() ? 0.0 : norm.mean[static_cast<std::size_t>(c)];
    const double sd = norm.std.empty() ? 1.0 : norm.std[static_cast<std::size_t>(c)];
    scale_.push_back(static_cast<float>(1.0 / (255.0 * sd)));
    bias_.push_back(static_cast<float>(-mean / sd));
  }
}

SampleAugmentation AugmentPipeline::draw(std::uint64_t seed, std::int64_t epoch,
                                         std::int64_t position) const {
  return draw_sample_augmentation(aug_, height_, width_, seed, epoch, position);
}

void AugmentPipeline::normalize(const std::uint8_t* src, float* dst) const {
  const std::int64_t plane = height_ * width_;
  for (std::int64_t c = 0; c < channels_; ++c) {
    const float scale = scale_[static_cast<std::size_t>(c)];
    const float bias = bias_[static_cast<std::size_t>(c)];
    const std::uint8_t* in = src + c * plane;
    float* out = dst + c * plane;
    for (std::int64_t k = 0; k < plane; ++k)
      out[k] = static_cast<float>(in[k]) * scale + bias;
  }
}

void AugmentPipeline::normalize_values(const float* src, float* dst) const {
  const std::int64_t plane = height_ * width_;
  for (std::int64_t c = 0; c < channels_; ++c) {
    const float scale = scale_[static_cast<std::size_t>(c)];
    const float bias = bias_[static_cast<std::size_t>(c)];
    const float* in = src + c * plane;
    float* out = dst + c * plane;
    for (std::int64_t k = 0; k < plane; ++k)
      out[k] = in[k] * scale + bias;
  }
}

void AugmentPipeline::apply(const std::uint8_t* src, const SampleAugmentation& draw, float* dst,
                            AugmentScratch& scratch) const {
  const std::int64_t plane = height_ * width_;
  const auto numel = static_cast<std::size_t>(channels_ * plane);
  const bool jitter = draw.brightness != 1.0f || draw.contrast != 1.0f || draw.saturation != 1.0f;
  const bool crop_flip = !draw.resized && (aug_.crop_padding > 0 || draw.crop.flip);
  const std::uint8_t* pixels = src;
  if (crop_flip) {
    scratch.bytes.resize(numel);
    augment_image(src, scratch.bytes.data(), channels_, height_, width_, aug_.crop_padding,
                  draw.crop);
    pixels = scratch.bytes.data();
  }
  if (!draw.resized && !jitter) {
    normalize(pixels, dst);
  } else {
    scratch.values.resize(numel);
    float* v = scratch.values.data();
    if (draw.resized) {
      resized_crop_bilinear(src, v, channels_, height_, width_, draw.window);
      if (draw.crop.flip) flip_horizontal(v, channels_, height_, width_);
    } else {
      for (std::size_t k = 0; k < numel; ++k)
        v[k] = static_cast<float>(pixels[k]);
    }
    if (draw.brightness != 1.0f) adjust_brightness(v, channels_, plane, draw.brightness);
    if (draw.contrast != 1.0f) adjust_contrast(v, channels_, plane, draw.contrast);
    if (draw.saturation != 1.0f) adjust_saturation(v, channels_, plane, draw.saturation);
    normalize_values(v, dst);
  }
  for (std::size_t h = 0; h + 1 < draw.hole_centres.size(); h += 2) {
    apply_cutout(dst, channels_, height_, width_, aug_.cutout.length, draw.hole_centres[h],
                 draw.hole_centres[h + 1]);
  }
}

Augmentation cifar_augmentation() {
  Augmentation aug(4, true);
  aug.cutout.n_holes = 1;
  aug.cutout.length = 16;
  return aug;
}

Normalization cifar100_normalization() {
  Normalization norm;
  for (double m : {129.3, 124.1, 112.4})
    norm.mean.push_back(static_cast<float>(m / 255.0));
  for (double s : {68.2, 65.4, 70.4})
    norm.std.push_back(static_cast<float>(s / 255.0));
  return norm;
}

}  // namespace mcd::data
