// Batching: converts uint8 images to normalised float32 tensors, with seeded shuffling and
// augmentation (augment.h). The order and every augmentation of epoch e are pure functions of
// (seed, e), so an interrupted run resumes bit-identically from (epoch, position).
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/data/augment.h>
#include <mcd/data/dataset.h>
#include <mcd/data/transforms.h>
#include <mcd/engine/tensor.h>

namespace mcd::data {

struct Batch {
  Tensor images;                      // float32 (B, C, H, W), normalised
  Tensor labels;                      // int64 (B)
  std::vector<std::int64_t> indices;  // (B) dataset indices of the samples
};

struct LoaderOptions {
  std::int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;  // drop the final batch when it has fewer than batch_size samples
  Augmentation augmentation;
  Normalization normalization;
  std::uint64_t seed = 0;
};

// The samples `indices` of `data`, normalised, without augmentation (validation and test).
Batch make_batch(const Dataset& data, const std::vector<std::int64_t>& indices,
                 const Normalization& norm);

// Iterates over `indices` of a dataset in batches. Holds a reference to `data`, which must
// outlive the iterator. Construction starts epoch 0.
class BatchIterator {
 public:
  BatchIterator(const Dataset& data, std::vector<std::int64_t> indices, LoaderOptions options);

  void start_epoch(std::int64_t epoch);  // the order of `epoch` (shuffled if options.shuffle)
  bool next(Batch& out);                 // false at the end of the epoch
  std::int64_t batches_per_epoch() const;
  std::int64_t num_samples() const { return static_cast<std::int64_t>(indices_.size()); }

  // Checkpoint position: the current epoch and the index of the next batch. restore()
  // continues with exactly the batches an uninterrupted run would produce.
  std::int64_t epoch() const { return epoch_; }
  std::int64_t position() const { return position_; }
  void restore(std::int64_t epoch, std::int64_t position);

  // Batch `b` of the current epoch, without moving the position. Const and independent of
  // other batches, so several threads may build batches of one epoch at once.
  Batch batch(std::int64_t b) const;
  // The same batch; `parallel` = false builds it on the calling thread only (no OpenMP), for
  // callers that build several batches on their own threads.
  Batch batch(std::int64_t b, bool parallel) const;
  const std::vector<std::int64_t>& epoch_order() const { return order_; }  // dataset indices

 private:
  static AugmentPipeline checked_pipeline(const Dataset& data,
                                          const std::vector<std::int64_t>& indices,
                                          const LoaderOptions& options);

  const Dataset* data_;
  std::vector<std::int64_t> indices_;
  LoaderOptions options_;
  AugmentPipeline pipeline_;
  std::vector<std::int64_t> order_;
  std::int64_t epoch_ = 0;
  std::int64_t position_ = 0;
};

}  // namespace mcd::data
