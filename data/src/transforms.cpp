// Channel statistics (exact integer sums per channel, OpenMP over images), validation of the
// augmentation options and the crop/flip step on uint8 images.
#include <mcd/data/transforms.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <mcd/data/augment.h>
#include <mcd/engine/error.h>

namespace mcd::data {

Normalization channel_statistics(const Dataset& d, const std::vector<std::int64_t>& indices) {
  check_dataset(d, "channel_statistics");
  check_indices(d, indices, "channel_statistics");
  MCD_CHECK(!indices.empty(), "channel_statistics: no indices given for dataset '{}'", d.name);
  const std::int64_t channels = d.channels;
  const std::int64_t plane = d.height * d.width;
  const auto count = static_cast<std::int64_t>(indices.size());
  // Integer sums are exact (< 2^63 for any data set that fits in memory) and so independent
  // of the thread count.
  std::vector<std::uint64_t> sum(static_cast<std::size_t>(channels), 0);
  std::vector<std::uint64_t> sum_sq(static_cast<std::size_t>(channels), 0);
#pragma omp parallel
  {
    std::vector<std::uint64_t> local(static_cast<std::size_t>(2 * channels), 0);
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      const std::uint8_t* img = d.image(indices[static_cast<std::size_t>(i)]);
      for (std::int64_t c = 0; c < channels; ++c) {
        const std::uint8_t* p = img + c * plane;
        std::uint64_t s = 0, s2 = 0;
        for (std::int64_t k = 0; k < plane; ++k) {
          const std::uint64_t v = p[k];
          s += v;
          s2 += v * v;
        }
        local[static_cast<std::size_t>(2 * c)] += s;
        local[static_cast<std::size_t>(2 * c + 1)] += s2;
      }
    }
#pragma omp critical(mcd_data_channel_statistics)
    for (std::int64_t c = 0; c < channels; ++c) {
      sum[static_cast<std::size_t>(c)] += local[static_cast<std::size_t>(2 * c)];
      sum_sq[static_cast<std::size_t>(c)] += local[static_cast<std::size_t>(2 * c + 1)];
    }
  }
  Normalization norm;
  const double n = static_cast<double>(count) * static_cast<double>(plane);
  for (std::int64_t c = 0; c < channels; ++c) {
    const double mean = static_cast<double>(sum[static_cast<std::size_t>(c)]) / n;
    const double var =
        std::max(0.0, static_cast<double>(sum_sq[static_cast<std::size_t>(c)]) / n - mean * mean);
    norm.mean.push_back(static_cast<float>(mean / 255.0));
    norm.std.push_back(static_cast<float>(std::sqrt(var) / 255.0));
  }
  return norm;
}

void check_normalization(const Normalization& norm, std::int64_t channels, const char* op) {
  if (norm.mean.empty() && norm.std.empty()) return;
  MCD_CHECK(static_cast<std::int64_t>(norm.mean.size()) == channels &&
                static_cast<std::int64_t>(norm.std.size()) == channels,
            "{}: normalization has {} means and {} stds, expected {} (one per channel)", op,
            norm.mean.size(), norm.std.size(), channels);
  for (std::int64_t c = 0; c < channels; ++c) {
    const float s = norm.std[static_cast<std::size_t>(c)];
    MCD_CHECK(s > 0.0f && std::isfinite(s), "{}: normalization std[{}] = {}, expected > 0", op, c,
              s);
  }
}

void check_augmentation(const Augmentation& aug, std::int64_t channels, const char* op) {
  MCD_CHECK(aug.crop_padding >= 0, "{}: augmentation.crop_padding = {}, expected >= 0", op,
            aug.crop_padding);
  const ResizedCrop& rc = aug.resized_crop;
  if (rc.enabled) {
    MCD_CHECK(aug.crop_padding == 0,
              "{}: augmentation.resized_crop and crop_padding = {} are both enabled; choose one",
              op, aug.crop_padding);
    MCD_CHECK(std::isfinite(rc.scale_min) && std::isfinite(rc.scale_max) && rc.scale_min > 0 &&
                  rc.scale_min <= rc.scale_max,
              "{}: augmentation.resized_crop scale range [{}, {}], expected 0 < min <= max", op,
              rc.scale_min, rc.scale_max);
    MCD_CHECK(std::isfinite(rc.ratio_min) && std::isfinite(rc.ratio_max) && rc.ratio_min > 0 &&
                  rc.ratio_min <= rc.ratio_max,
              "{}: augmentation.resized_crop ratio range [{}, {}], expected 0 < min <= max", op,
              rc.ratio_min, rc.ratio_max);
  }
  const ColorJitter& cj = aug.color_jitter;
  for (const auto& [name, value] : {std::pair<const char*, double>{"brightness", cj.brightness},
                                    {"contrast", cj.contrast},
                                    {"saturation", cj.saturation}}) {
    MCD_CHECK(std::isfinite(value) && value >= 0,
              "{}: augmentation.color_jitter.{} = {}, expected >= 0", op, name, value);
  }
  MCD_CHECK((cj.contrast == 0 && cj.saturation == 0) || channels == 1 || channels == 3,
            "{}: augmentation.color_jitter contrast/saturation need 1 or 3 channels, the images "
            "have {}",
            op, channels);
  MCD_CHECK(aug.cutout.n_holes >= 0 && aug.cutout.length >= 0 &&
                (aug.cutout.n_holes == 0 || aug.cutout.length > 0),
            "{}: augmentation.cutout n_holes = {}, length = {}, expected n_holes >= 0 and "
            "length > 0 when there are holes",
            op, aug.cutout.n_holes, aug.cutout.length);
}

AugmentDraw draw_augmentation(const Augmentation& aug, std::uint64_t seed, std::int64_t epoch,
                              std::int64_t position) {
  MCD_CHECK(aug.crop_padding >= 0, "draw_augmentation: crop_padding = {}, expected >= 0",
            aug.crop_padding);
  // The crop/flip draws come first in the full pipeline's sequence, so they agree with it.
  const Augmentation crop_flip(aug.crop_padding, aug.horizontal_flip);
  return draw_sample_augmentation(crop_flip, 1, 1, seed, epoch, position).crop;
}

void augment_image(const std::uint8_t* src, std::uint8_t* dst, std::int64_t channels,
                   std::int64_t height, std::int64_t width, std::int64_t padding,
                   const AugmentDraw& draw) {
  MCD_CHECK(padding >= 0 && draw.offset_y >= 0 && draw.offset_y <= 2 * padding &&
                draw.offset_x >= 0 && draw.offset_x <= 2 * padding,
            "augment_image: crop offset ({}, {}) outside [0, {}] for padding {}", draw.offset_y,
            draw.offset_x, 2 * padding, padding);
  const std::int64_t dy = draw.offset_y - padding;  // source row = y + dy
  const std::int64_t dx = draw.offset_x - padding;  // source column = x' + dx
  // Output columns x' whose source column is inside the image, before the flip.
  const std::int64_t x_lo = std::clamp<std::int64_t>(-dx, 0, width);
  const std::int64_t x_hi = std::clamp<std::int64_t>(width - dx, 0, width);
  for (std::int64_t c = 0; c < channels; ++c) {
    for (std::int64_t y = 0; y < height; ++y) {
      std::uint8_t* out = dst + (c * height + y) * width;
      const std::int64_t sy = y + dy;
      if (sy < 0 || sy >= height || x_lo >= x_hi) {
        std::memset(out, 0, static_cast<std::size_t>(width));
        continue;
      }
      const std::uint8_t* in = src + (c * height + sy) * width;
      std::memset(out, 0, static_cast<std::size_t>(width));
      if (!draw.flip) {
        std::memcpy(out + x_lo, in + x_lo + dx, static_cast<std::size_t>(x_hi - x_lo));
      } else {
        for (std::int64_t x = x_lo; x < x_hi; ++x)
          out[width - 1 - x] = in[x + dx];
      }
    }
  }
}

}  // namespace mcd::data
