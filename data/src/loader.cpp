// Batch assembly: OpenMP over the samples of a batch (unless the caller builds batches on its
// own threads); each sample goes through AugmentPipeline (augment.h), whose normalisation
// pixel * scale[c] + bias[c] equals (pixel / 255 - mean[c]) / std[c].
#include <mcd/data/loader.h>

#include <algorithm>
#include <numeric>

#include <mcd/engine/error.h>
#include <mcd/engine/generator.h>

#include "seeding.h"

namespace mcd::data {
namespace {

// Fills a batch from `indices` (dataset indices); `draws` is either empty (no augmentation)
// or holds one draw per sample. `parallel` allows OpenMP over the samples.
Batch assemble(const Dataset& d, std::vector<std::int64_t> indices, const AugmentPipeline& pipeline,
               const std::vector<SampleAugmentation>& draws, bool parallel) {
  const auto count = static_cast<std::int64_t>(indices.size());
  const std::int64_t numel = d.image_numel();
  Batch b;
  b.images = Tensor::empty({count, d.channels, d.height, d.width}, DType::Float32);
  b.labels = Tensor::empty({count}, DType::Int64);
  float* images = b.images.data<float>();
  std::int64_t* labels = b.labels.data<std::int64_t>();
  const bool augment = !draws.empty();
#pragma omp parallel if (parallel && count * numel >= 32768)
  {
    AugmentScratch scratch;
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t idx = indices[static_cast<std::size_t>(i)];
      const std::uint8_t* src = d.image(idx);
      if (augment) {
        pipeline.apply(src, draws[static_cast<std::size_t>(i)], images + i * numel, scratch);
      } else {
        pipeline.normalize(src, images + i * numel);
      }
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
  const AugmentPipeline pipeline(Augmentation{}, norm, data.channels, data.height, data.width);
  return assemble(data, indices, pipeline, {}, true);
}

BatchIterator::BatchIterator(const Dataset& data, std::vector<std::int64_t> indices,
                             LoaderOptions options)
    : data_(&data),
      indices_(std::move(indices)),
      options_(std::move(options)),
      pipeline_(checked_pipeline(data, indices_, options_)) {
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

AugmentPipeline BatchIterator::checked_pipeline(const Dataset& data,
                                                const std::vector<std::int64_t>& indices,
                                                const LoaderOptions& options) {
  check_dataset(data, "BatchIterator");
  check_indices(data, indices, "BatchIterator");
  check_normalization(options.normalization, data.channels, "BatchIterator");
  MCD_CHECK(options.batch_size > 0, "BatchIterator: batch_size = {}, expected > 0",
            options.batch_size);
  check_augmentation(options.augmentation, data.channels, "BatchIterator");
  return AugmentPipeline(options.augmentation, options.normalization, data.channels, data.height,
                         data.width);
}

Batch BatchIterator::batch(std::int64_t b) const {
  return batch(b, true);
}

Batch BatchIterator::batch(std::int64_t b, bool parallel) const {
  MCD_CHECK(b >= 0 && b < batches_per_epoch(),
            "BatchIterator::batch: batch {} outside [0, {}) of epoch {}", b, batches_per_epoch(),
            epoch_);
  const std::int64_t begin = b * options_.batch_size;
  const std::int64_t end = std::min(begin + options_.batch_size, num_samples());
  std::vector<std::int64_t> idx(order_.begin() + begin, order_.begin() + end);
  // The dataset is held by reference and may have changed since construction; the kernels
  // read raw pixel pointers, so the batch's indices and the image shape are checked again.
  const Dataset& d = *data_;
  MCD_CHECK(d.channels * d.height * d.width == pipeline_.numel() &&
                d.pixels.size() == static_cast<std::size_t>(d.size() * d.image_numel()),
            "BatchIterator::batch: dataset '{}' changed shape since construction ({} images, "
            "{} pixel bytes, {}x{}x{})",
            d.name, d.size(), d.pixels.size(), d.channels, d.height, d.width);
  check_indices(d, idx, "BatchIterator::batch");
  std::vector<SampleAugmentation> draws;
  if (options_.augmentation.enabled()) {
    draws.reserve(idx.size());
    for (std::int64_t k = begin; k < end; ++k)
      draws.push_back(pipeline_.draw(options_.seed, epoch_, k));
  }
  return assemble(d, std::move(idx), pipeline_, draws, parallel);
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
