// Batching: normalisation, shuffling, augmentation through the iterator, determinism,
// checkpoint restore and drop_last.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include <mcd/data/loader.h>
#include <mcd/engine/generator.h>
#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd::data;
using mcd::DType;
using mcd::Shape;

namespace {

Dataset make_dataset(std::int64_t n) {
  return mcd::testing::random_dataset(n, 2, 3, 4, 5, 42,
                                      [](std::int64_t i, mcd::Generator&) { return (i * 7) % 5; });
}

using mcd::testing::iota;

std::vector<Batch> drain(BatchIterator& it) {
  std::vector<Batch> out;
  Batch b;
  while (it.next(b))
    out.push_back(b);
  return out;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.images.shape() == b.images.shape() &&
         a.images.to_doubles() == b.images.to_doubles() &&
         a.labels.to_doubles() == b.labels.to_doubles();
}

std::vector<std::int64_t> concat_indices(const std::vector<Batch>& batches) {
  std::vector<std::int64_t> all;
  for (const Batch& b : batches)
    all.insert(all.end(), b.indices.begin(), b.indices.end());
  return all;
}

}  // namespace

TEST_CASE("make_batch converts and normalises without augmentation", "[data][loader]") {
  const Dataset d = make_dataset(10);
  const Normalization norm{{0.25f, 0.5f}, {0.2f, 0.4f}};
  const std::vector<std::int64_t> idx = {7, 2, 2, 9};
  const Batch b = make_batch(d, idx, norm);
  CHECK(b.images.shape() == Shape{4, 2, 3, 4});
  CHECK(b.images.dtype() == DType::Float32);
  CHECK(b.labels.shape() == Shape{4});
  CHECK(b.labels.dtype() == DType::Int64);
  CHECK(b.indices == idx);
  const std::vector<double> img = b.images.to_doubles();
  const std::vector<double> lab = b.labels.to_doubles();
  for (std::size_t i = 0; i < idx.size(); ++i) {
    CHECK(lab[i] == static_cast<double>(d.labels[static_cast<std::size_t>(idx[i])]));
    for (std::int64_t c = 0; c < 2; ++c) {
      for (std::int64_t k = 0; k < 12; ++k) {
        const double pixel = d.image(idx[i])[c * 12 + k];
        const double want = (pixel / 255.0 - norm.mean[static_cast<std::size_t>(c)]) /
                            norm.std[static_cast<std::size_t>(c)];
        REQUIRE(img[i * 24 + static_cast<std::size_t>(c * 12 + k)] == Approx(want).margin(1e-5));
      }
    }
  }
  // Empty normalisation: pixels / 255.
  const Batch raw = make_batch(d, {3}, Normalization{});
  const std::vector<double> r = raw.images.to_doubles();
  for (std::size_t k = 0; k < 24; ++k)
    REQUIRE(r[k] == Approx(d.image(3)[k] / 255.0).margin(1e-7));

  using Catch::Contains;
  REQUIRE_THROWS_WITH(make_batch(d, {10}, norm), Contains("make_batch") && Contains("index 10"));
  REQUIRE_THROWS_WITH(make_batch(d, {0}, Normalization{{0.5f}, {0.5f}}),
                      Contains("make_batch") && Contains("expected 2"));
  REQUIRE_THROWS_WITH(make_batch(d, {0}, Normalization{{0.5f, 0.5f}, {0.5f, 0.0f}}),
                      Contains("std[1]"));
}

TEST_CASE("BatchIterator without shuffling walks the indices in order", "[data][loader]") {
  const Dataset d = make_dataset(23);
  LoaderOptions opt;
  opt.batch_size = 5;
  opt.shuffle = false;
  BatchIterator it(d, iota(23), opt);
  CHECK(it.batches_per_epoch() == 5);
  const std::vector<Batch> batches = drain(it);
  REQUIRE(batches.size() == 5);
  CHECK(batches.back().indices.size() == 3);
  CHECK(batches.back().images.shape() == Shape{3, 2, 3, 4});
  CHECK(concat_indices(batches) == iota(23));
  CHECK(it.position() == 5);
  Batch extra;
  CHECK_FALSE(it.next(extra));
  for (const Batch& b : batches)
    CHECK(same_batch(b, make_batch(d, b.indices, {})));

  SECTION("drop_last drops the short final batch") {
    opt.drop_last = true;
    BatchIterator dl(d, iota(23), opt);
    CHECK(dl.batches_per_epoch() == 4);
    const std::vector<Batch> full = drain(dl);
    REQUIRE(full.size() == 4);
    for (const Batch& b : full)
      CHECK(b.indices.size() == 5);
    opt.batch_size = 23;
    CHECK(BatchIterator(d, iota(23), opt).batches_per_epoch() == 1);
    opt.batch_size = 24;
    CHECK(BatchIterator(d, iota(23), opt).batches_per_epoch() == 0);
    opt.drop_last = false;
    CHECK(BatchIterator(d, iota(23), opt).batches_per_epoch() == 1);
  }
  SECTION("a subset of indices") {
    const std::vector<std::int64_t> subset = {20, 3, 8};
    opt.batch_size = 2;
    BatchIterator sub(d, subset, opt);
    CHECK(concat_indices(drain(sub)) == subset);
  }
  SECTION("invalid options") {
    using Catch::Contains;
    opt.batch_size = 0;
    REQUIRE_THROWS_WITH(BatchIterator(d, iota(3), opt), Contains("batch_size = 0"));
    opt.batch_size = 4;
    REQUIRE_THROWS_WITH(BatchIterator(d, {0, 23}, opt),
                        Contains("BatchIterator") && Contains("index 23"));
    opt.normalization = Normalization{{0.1f, 0.2f, 0.3f}, {1, 1, 1}};
    REQUIRE_THROWS_WITH(BatchIterator(d, iota(3), opt), Contains("expected 2"));
  }
}

TEST_CASE("BatchIterator shuffles deterministically per (seed, epoch)", "[data][loader]") {
  const Dataset d = make_dataset(37);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 3;
  opt.augmentation = Augmentation{2, true};
  opt.normalization = Normalization{{0.5f, 0.4f}, {0.25f, 0.3f}};
  BatchIterator a(d, iota(37), opt), b(d, iota(37), opt);
  const std::vector<Batch> a0 = drain(a), b0 = drain(b);
  REQUIRE(a0.size() == 5);
  for (std::size_t i = 0; i < a0.size(); ++i)
    CHECK(same_batch(a0[i], b0[i]));
  // Every sample exactly once, in shuffled order.
  std::vector<std::int64_t> order = concat_indices(a0);
  CHECK(order != iota(37));
  std::sort(order.begin(), order.end());
  CHECK(order == iota(37));

  a.start_epoch(1);
  const std::vector<Batch> a1 = drain(a);
  CHECK(concat_indices(a1) != concat_indices(a0));
  b.start_epoch(1);
  const std::vector<Batch> b1 = drain(b);
  for (std::size_t i = 0; i < a1.size(); ++i)
    CHECK(same_batch(a1[i], b1[i]));
  // Going back to epoch 0 reproduces it.
  a.start_epoch(0);
  const std::vector<Batch> again = drain(a);
  for (std::size_t i = 0; i < a0.size(); ++i)
    CHECK(same_batch(a0[i], again[i]));

  opt.seed = 4;
  BatchIterator c(d, iota(37), opt);
  CHECK(concat_indices(drain(c)) != concat_indices(a0));
}

TEST_CASE("BatchIterator augments each sample by its position, not its batch", "[data][loader]") {
  const Dataset d = make_dataset(29);
  LoaderOptions opt;
  opt.seed = 9;
  opt.augmentation = Augmentation{1, true};
  const std::int64_t numel = d.image_numel();
  std::vector<std::vector<double>> per_position[2];
  for (std::int64_t batch_size : {4, 7}) {
    opt.batch_size = batch_size;
    BatchIterator it(d, iota(29), opt);
    it.start_epoch(2);
    std::vector<std::vector<double>> samples;
    std::int64_t position = 0;
    Batch b;
    bool augmented = false;
    while (it.next(b)) {
      const std::vector<double> img = b.images.to_doubles();
      for (std::size_t i = 0; i < b.indices.size(); ++i, ++position) {
        // Empty normalisation: the batch holds pixel / 255 of the augmented image.
        std::vector<std::uint8_t> want(static_cast<std::size_t>(numel));
        const AugmentDraw draw = draw_augmentation(opt.augmentation, 9, 2, position);
        augment_image(d.image(b.indices[i]), want.data(), 2, 3, 4, 1, draw);
        augmented |= draw.flip || draw.offset_x != 1 || draw.offset_y != 1;
        std::vector<double> got(img.begin() + static_cast<long>(i) * numel,
                                img.begin() + static_cast<long>(i + 1) * numel);
        for (std::int64_t k = 0; k < numel; ++k) {
          REQUIRE(got[static_cast<std::size_t>(k)] * 255.0 ==
                  Approx(want[static_cast<std::size_t>(k)]).margin(1e-4));
        }
        samples.push_back(got);
      }
    }
    CHECK(augmented);
    per_position[batch_size == 4 ? 0 : 1] = samples;
  }
  // The batch size changes the batch boundaries, not a sample's order or augmentation.
  CHECK(per_position[0] == per_position[1]);
}

TEST_CASE("BatchIterator::restore continues like an uninterrupted run", "[data][loader]") {
  const Dataset d = make_dataset(26);
  LoaderOptions opt;
  opt.batch_size = 6;
  opt.seed = 17;
  opt.augmentation = Augmentation{2, true};
  BatchIterator reference(d, iota(26), opt);
  std::vector<Batch> stream;  // epochs 0..2, back to back
  for (std::int64_t e = 0; e < 3; ++e) {
    reference.start_epoch(e);
    for (const Batch& b : drain(reference))
      stream.push_back(b);
  }
  const std::int64_t per_epoch = reference.batches_per_epoch();
  REQUIRE(per_epoch == 5);

  for (std::int64_t stop : {0, 3, 5, 7, 10}) {
    // Run `stop` batches, record the checkpoint position, then resume in a fresh iterator.
    BatchIterator first(d, iota(26), opt);
    std::int64_t done = 0;
    Batch b;
    while (done < stop) {
      if (!first.next(b)) {
        first.start_epoch(first.epoch() + 1);
        continue;
      }
      REQUIRE(same_batch(b, stream[static_cast<std::size_t>(done)]));
      ++done;
    }
    const std::int64_t epoch = first.epoch(), position = first.position();
    INFO("stopped after " << stop << " batches at epoch " << epoch << " position " << position);
    BatchIterator resumed(d, iota(26), opt);
    resumed.restore(epoch, position);
    CHECK(resumed.epoch() == epoch);
    CHECK(resumed.position() == position);
    std::int64_t k = stop;
    while (k < static_cast<std::int64_t>(stream.size())) {
      if (!resumed.next(b)) {
        resumed.start_epoch(resumed.epoch() + 1);
        continue;
      }
      REQUIRE(same_batch(b, stream[static_cast<std::size_t>(k)]));
      ++k;
    }
  }
  // batch(b) is the same batch next() yields, without moving the position.
  BatchIterator random_access(d, iota(26), opt);
  random_access.start_epoch(1);
  CHECK(same_batch(random_access.batch(3), stream[static_cast<std::size_t>(per_epoch + 3)]));
  CHECK(random_access.position() == 0);
  REQUIRE_THROWS_WITH(random_access.restore(1, 6), Catch::Contains("position 6"));
  REQUIRE_THROWS_WITH(random_access.batch(5), Catch::Contains("batch 5"));
}
