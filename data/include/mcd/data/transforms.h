// Per-channel normalisation statistics and the training augmentation (random crop from a
// zero-padded image, horizontal flip). Augmentation works in uint8 pixel space, before
// normalisation, so padded pixels are black (0), as in torchvision's RandomCrop.
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

// Random crop of the original size from the image padded by crop_padding zeros on every side;
// horizontal flip with probability 1/2.
struct Augmentation {
  std::int64_t crop_padding = 0;
  bool horizontal_flip = false;
};

// One sample's draw: the crop window's top-left corner in padded coordinates, each in
// [0, 2 * crop_padding] (crop_padding, crop_padding is the identity), and the flip.
struct AugmentDraw {
  std::int64_t offset_y = 0, offset_x = 0;
  bool flip = false;
};

// Depends only on its arguments: `position` is the sample's place in the epoch's order, so
// the draw does not depend on batch boundaries or on which thread builds the sample.
AugmentDraw draw_augmentation(const Augmentation& aug, std::uint64_t seed, std::int64_t epoch,
                              std::int64_t position);

// dst(c, y, x) = src(c, y + offset_y - padding, x' + offset_x - padding), or 0 outside the
// source, where x' = width - 1 - x when flipped and x otherwise. src and dst are (C, H, W)
// and must not overlap.
void augment_image(const std::uint8_t* src, std::uint8_t* dst, std::int64_t channels,
                   std::int64_t height, std::int64_t width, std::int64_t padding,
                   const AugmentDraw& draw);

}  // namespace mcd::data
