// Per-channel normalisation statistics, the training augmentation's options and its crop/flip
// step (random crop from a zero-padded image, horizontal flip). Crop and flip work in uint8
// pixel space, before normalisation, so padded pixels are black (0), as in torchvision.
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/data/dataset.h>

namespace mcd::data {

// Per channel, in [0, 1] pixel units (pixel / 255). Empty vectors mean mean 0 and std 1.
struct Normalization {
  std::vector<float> mean, std;
};

// Mean and population standard deviation of every channel over the images at `indices`.
Normalization channel_statistics(const Dataset& d, const std::vector<std::int64_t>& indices);

// Throws naming `op` unless `norm` is empty or has one entry per channel with std > 0.
void check_normalization(const Normalization& norm, std::int64_t channels, const char* op);

// torchvision's RandomResizedCrop: a window covering a fraction of the area drawn uniformly from
// [scale_min, scale_max], with aspect ratio (width / height) log-uniform in
// [ratio_min, ratio_max]; 10 attempts, then a centre crop; resized back to the image size
// (bilinear, half-pixel centres).
struct ResizedCrop {
  bool enabled = false;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
};

// torchvision's ColorJitter without hue, applied in the fixed order brightness, contrast,
// saturation: each factor is drawn uniformly from [max(0, 1 - x), 1 + x]; x = 0 disables it.
struct ColorJitter {
  double brightness = 0, contrast = 0, saturation = 0;
  bool enabled() const { return brightness > 0 || contrast > 0 || saturation > 0; }
};

// Cutout (DeVries and Taylor, 2017): n_holes squares of side `length` whose centres are uniform
// over the image, clipped at the borders, set to 0 after normalisation.
struct Cutout {
  std::int64_t n_holes = 0, length = 0;
};

// The training augmentation. Applied in this order (see augment.h): resized crop or padded
// crop, horizontal flip, colour jitter, normalisation, cutout. crop_padding: random crop of the
// original size from the image padded by crop_padding zeros on every side; horizontal flip with
// probability 1/2.
struct Augmentation {
  std::int64_t crop_padding = 0;
  bool horizontal_flip = false;
  ResizedCrop resized_crop;
  ColorJitter color_jitter;
  Cutout cutout;

  Augmentation() = default;
  Augmentation(std::int64_t padding, bool flip) : crop_padding(padding), horizontal_flip(flip) {}
  // Whether any random transform is enabled.
  bool enabled() const {
    return crop_padding > 0 || horizontal_flip || resized_crop.enabled || color_jitter.enabled() ||
           cutout.n_holes > 0;
  }
};

// Throws naming `op` and the field when an option is out of range or the combination is not
// supported for images of `channels` channels (contrast and saturation need 1 or 3 channels;
// resized crop and padded crop exclude each other).
void check_augmentation(const Augmentation& aug, std::int64_t channels, const char* op);

// One sample's draw: the crop window's top-left corner in padded coordinates, each in
// [0, 2 * crop_padding] (crop_padding, crop_padding is the identity), and the flip.
struct AugmentDraw {
  std::int64_t offset_y = 0, offset_x = 0;
  bool flip = false;
};

// Depends only on its arguments: `position` is the sample's place in the epoch's order, so
// the draw does not depend on batch boundaries or on which thread builds the sample. This is
// the crop/flip part of draw_sample_augmentation (augment.h), which draws the full pipeline.
AugmentDraw draw_augmentation(const Augmentation& aug, std::uint64_t seed, std::int64_t epoch,
                              std::int64_t position);

// dst(c, y, x) = src(c, y + offset_y - padding, x' + offset_x - padding), or 0 outside the
// source, where x' = width - 1 - x when flipped and x otherwise. src and dst are (C, H, W)
// and must not overlap.
void augment_image(const std::uint8_t* src, std::uint8_t* dst, std::int64_t channels,
                   std::int64_t height, std::int64_t width, std::int64_t padding,
                   const AugmentDraw& draw);

}  // namespace mcd::data
