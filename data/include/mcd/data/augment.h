// The training augmentation pipeline, one sample at a time, in this fixed order:
//   1. resized crop (bilinear back to H x W) or random crop from the zero-padded image,
//   2. horizontal flip, 3. colour jitter (brightness, contrast, saturation),
//   4. normalisation, 5. cutout (holes set to 0 in the normalised image).
// Invariant: every random choice of a sample comes from one generator seeded by
// (seed, epoch, position in the epoch order), so results do not depend on batch size or threads.
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/data/transforms.h>
#include <mcd/engine/generator.h>

namespace mcd::data {

// A crop window in source pixel coordinates.
struct CropWindow {
  std::int64_t top = 0, left = 0, height = 0, width = 0;
};

// One sample's random choices. Draws happen in the pipeline's order: resized crop window (or
// padded-crop offsets), flip, brightness, contrast, saturation, then (y, x) per hole.
struct SampleAugmentation {
  AugmentDraw crop;         // padded-crop offsets (identity when unused) and the flip
  bool resized = false;     // whether `window` is resized back to the image size
  CropWindow window;        // the resized crop's window
  float brightness = 1.0f;  // jitter factors; 1 is the identity
  float contrast = 1.0f;
  float saturation = 1.0f;
  std::vector<std::int64_t> hole_centres;  // (n_holes, 2): y, x
};

// torchvision's RandomResizedCrop.get_params for an image of height x width.
CropWindow draw_resized_crop(Generator& gen, std::int64_t height, std::int64_t width,
                             const ResizedCrop& options);

// Every draw of sample `position` of `epoch`, for images of height x width.
SampleAugmentation draw_sample_augmentation(const Augmentation& aug, std::int64_t height,
                                            std::int64_t width, std::uint64_t seed,
                                            std::int64_t epoch, std::int64_t position);

// ---- the steps, on float images in pixel units [0, 255], (C, H, W) row-major

// dst (C, H, W) = the window of src (C, H, W, uint8) resized to H x W, bilinear with half-pixel
// centres (PyTorch's interpolate(mode="bilinear", align_corners=False)).
void resized_crop_bilinear(const std::uint8_t* src, float* dst, std::int64_t channels,
                           std::int64_t height, std::int64_t width, const CropWindow& window);
void flip_horizontal(float* img, std::int64_t channels, std::int64_t height, std::int64_t width);
// torchvision's adjust_brightness / adjust_contrast / adjust_saturation on float images: a blend
// with black, with the mean grey level, with the per-pixel grey level
// (0.2989 R + 0.587 G + 0.114 B; the image itself when C = 1), clamped to [0, 255].
void adjust_brightness(float* img, std::int64_t channels, std::int64_t plane, float factor);
void adjust_contrast(float* img, std::int64_t channels, std::int64_t plane, float factor);
void adjust_saturation(float* img, std::int64_t channels, std::int64_t plane, float factor);
// Zeroes rows [cy - length/2, cy + length/2) x columns [cx - length/2, cx + length/2), clipped
// to the image, in every channel (the reference cutout code's mask).
void apply_cutout(float* img, std::int64_t channels, std::int64_t height, std::int64_t width,
                  std::int64_t length, std::int64_t centre_y, std::int64_t centre_x);

// Per-thread working memory of AugmentPipeline::apply, reused across samples.
struct AugmentScratch {
  std::vector<std::uint8_t> bytes;
  std::vector<float> values;
};

// The pipeline for one image shape, augmentation and normalisation, validated once.
class AugmentPipeline {
 public:
  AugmentPipeline(const Augmentation& aug, const Normalization& norm, std::int64_t channels,
                  std::int64_t height, std::int64_t width);

  SampleAugmentation draw(std::uint64_t seed, std::int64_t epoch, std::int64_t position) const;
  // src (C, H, W) uint8 -> dst (C, H, W) float32, normalised; `draw` from draw().
  void apply(const std::uint8_t* src, const SampleAugmentation& draw, float* dst,
             AugmentScratch& scratch) const;
  // Normalisation only: (pixel / 255 - mean[c]) / std[c].
  void normalize(const std::uint8_t* src, float* dst) const;
  const Augmentation& augmentation() const { return aug_; }
  std::int64_t numel() const { return channels_ * height_ * width_; }  // C * H * W

 private:
  void normalize_values(const float* src, float* dst) const;

  Augmentation aug_;
  std::int64_t channels_, height_, width_;
  std::vector<float> scale_, bias_;  // (C): pixel * scale + bias is the normalised value
};

// The released CIFAR recipe (DESIGN.md section 3): random crop with padding 4, horizontal flip,
// normalisation with cifar100_normalization(), then one 16x16 cutout hole.
Augmentation cifar_augmentation();
Normalization
cifar100_normalization();  // mean (129.3, 124.1, 112.4)/255, std (68.2, 65.4, 70.4)/255

}  // namespace mcd::data
