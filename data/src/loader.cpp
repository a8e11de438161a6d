// Batch assembly: OpenMP over the samples of a batch; each sample is cropped/flipped in uint8
// (augment_image) and then scaled as pixel * scale[c] + bias[c], which equals
// (pixel / 255 - mean[c]) / std[c].
#include <mcd/data/loader.h>

#include <algorithm>
#include <numeric>

#include <mcd/engine/error.h>
#include <mcd/engine/generator.h>

#include "seeding.h"

namespace mcd::data {
namespace {

struct ChannelAffine {
  std::vector<float> scale, bias;  // (C)
};

ChannelAffine channel_affine(const Normalization& norm, std::int64_t channels) {
  ChannelAffine a;
  for (std::int64_t c = 0; c < channels; ++c) {
    const double mean = norm.mean.empty() ? 0.0 : norm.mean[static_cast<std::size_t>(c)];
    const double sd = norm.std.empty() ? 1.0 : norm.std[static_cast<std::size_t>(c)];
    a.scale.push_back(static_cast<float>(1.0 / (255.0 * sd)));
    a.bias.push_back(static_cast<float>(-mean / sd));
  }
  return a;
}

void normalize_image(const std::uint8_t* src, float* dst, std::int64_t channels, std::int64_t plane,
                     const ChannelAffine& a) {
  for (std::int64_t c = 0; c < channels; ++c) {
    const float scale = a.scale[static_cast<std::size_t>(c)];
    const float bias = a.bias[static_cast<std::size_t>(c)];
    const std::uint8_t* in = src + c * plane;
    float* out = dst + c * plane;
    for (std::int64_t k = 0; k < plane; ++k)
      out[k] = static_cast<float>(in[k]) * scale + bias;
  }
}

// Fills a batch from `indices` (dataset indices); `draws` is either empty (no augmentation)
// or holds one draw per sample.
Batch assemble(const Dataset& d, std::vector<std::int64_t> indices, const Normalization& norm,
               std::int64_t padding, const std::vector<AugmentDraw>& draws) {
  const auto count = static_cast<std::int64_t>(indices.size());
  const std::int64_t numel = d.image_numel();
  const ChannelAffine affine = channel_affine(norm, d.channels);
  Batch b;
  b.images = Tensor::empty({count, d.channels, d.height, d.width}, DType::Float32);
  b.labels = Tensor::empty({count}, DType::Int64);
  float* images = b.images.data<float>();
  std::int64_t* labels = b.labels.data<std::int64_t>();
  const bool augment = !draws.empty();
#pragma omp parallel if (count * numel >= 32768)
  {
    std::vector<std::uint8_t> scratch(augment ? static_cast<std::size_t>(numel) : 0);
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t idx = indices[static_cast<std::size_t>(i)];
      const std::uint8_t* src = d.image(idx);
      if (augment) {
        augment_image(src, scratch.data(), d.channels, d.height, d.width, padding,
                      draws[static_cast<std::size_t>(i)]);
        src = scratch.data();
      }
      normalize_image(src, images + i * numel, d.channels, d.height * d.width, affine);
      labels[i] = d.labels[static_cast<std::size_t>(idx)];
    }
  }
  b.indices = std::move(indices);
  return b;
}

}  // namespace

Batch make_batch(const Dataset& data, const std::vector<std::int64_t>& indices,
                 const Normalization& norm) {
  check_dataset(data, "make_batch");
  check_indices(data, indices, "make_batch");
  check_normalization(norm, data.channels, "make_batch");
  return assemble(data, indices, norm, 0, {});
}

BatchIterator::BatchIterator(const Dataset& data, std::vector<std::int64_t> indices,
                             LoaderOptions options)
    : data_(&data), indices_(std::move(indices)), options_(std::move(options)) {
  check_dataset(data, "BatchIterator");
  check_indices(data, indices_, "BatchIterator");
  check_normalization(options_.normalization, data.channels, "BatchIterator");
  MCD_CHECK(options_.batch_size > 0, "BatchIterator: batch_size = {}, expected > 0",
            options_.batch_size);
  MCD_CHECK(options_.augmentation.crop_padding >= 0,
            "BatchIterator: augmentation.crop_padding = {}, expected >= 0",
            options_.augmentation.crop_padding);
  start_epoch(0);
}

void BatchIterator::start_epoch(std::int64_t epoch) {
  MCD_CHECK(epoch >= 0, "BatchIterator::start_epoch: epoch = {}, expected >= 0", epoch);
  epoch_ = epoch;
  position_ = 0;
  order_ = indices_;
  if (!options_.shuffle) return;
  Generator gen(detail::derive_seed(options_.seed, detail::SeedStream::Shuffle, epoch));
  for (std::size_t i = order_.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(gen.below(i));
    std::swap(order_[i - 1], order_[j]);
  }
}

std::int64_t BatchIterator::batches_per_epoch() const {
  const std::int64_t n = num_samples();
  const std::int64_t bs = options_.batch_size;
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

Batch BatchIterator::batch(std::int64_t b) const {
  MCD_CHECK(b >= 0 && b < batches_per_epoch(),
            "BatchIterator::batch: batch {} outside [0, {}) of epoch {}", b, batches_per_epoch(),
            epoch_);
  const std::int64_t begin = b * options_.batch_size;
  const std::int64_t end = std::min(begin + options_.batch_size, num_samples());
  std::vector<std::int64_t> idx(order_.begin() + begin, order_.begin() + end);
  const Augmentation& aug = options_.augmentation;
  std::vector<AugmentDraw> draws;
  if (aug.crop_padding > 0 || aug.horizontal_flip) {
    draws.reserve(idx.size());
    for (std::int64_t k = begin; k < end; ++k) {
      draws.push_back(draw_augmentation(aug, options_.seed, epoch_, k));
    }
  }
  return assemble(*data_, std::move(idx), options_.normalization, aug.crop_padding, draws);
}

bool BatchIterator::next(Batch& out) {
  if (position_ >= batches_per_epoch()) return false;
  out = batch(position_);
  ++position_;
  return true;
}

void BatchIterator::restore(std::int64_t epoch, std::int64_t position) {
  MCD_CHECK(position >= 0 && position <= batches_per_epoch(),
            "BatchIterator::restore: position {} outside [0, {}] for epoch {}", position,
            batches_per_epoch(), epoch);
  start_epoch(epoch);
  position_ = position;
}

}  // namespace mcd::data
