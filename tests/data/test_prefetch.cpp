// PrefetchLoader: the same batches as BatchIterator for any thread count and capacity, exact
// resume, worker failures surfacing in the trainer with their message, stop and teardown.
#include <catch2/catch.hpp>

#include <vector>

#include <mcd/data/augment.h>
#include <mcd/data/prefetch_loader.h>
#include <mcd/engine/generator.h>
#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd::data;

namespace {

Dataset random_dataset(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  return mcd::testing::random_dataset(n, c, h, w, 4, 77,
                                      [](std::int64_t i, mcd::Generator&) { return (i * 3) % 4; });
}

using mcd::testing::iota;

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.images.shape() == b.images.shape() &&
         a.images.to_doubles() == b.images.to_doubles() &&
         a.labels.to_doubles() == b.labels.to_doubles();
}

LoaderOptions options() {
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 13;
  opt.augmentation = cifar_augmentation();
  opt.augmentation.cutout.length = 4;
  opt.augmentation.color_jitter = ColorJitter{0.3, 0.3, 0.3};
  opt.normalization = Normalization{{0.5f, 0.5f, 0.5f}, {0.25f, 0.25f, 0.25f}};
  return opt;
}

// Epochs 0 and 1 back to back, from the synchronous iterator.
std::vector<Batch> reference_stream(const Dataset& d, const LoaderOptions& opt) {
  BatchIterator it(d, iota(d.size()), opt);
  std::vector<Batch> out;
  for (std::int64_t e = 0; e < 2; ++e) {
    it.start_epoch(e);
    Batch b;
    while (it.next(b))
      out.push_back(b);
  }
  return out;
}

}  // namespace

TEST_CASE("PrefetchLoader gives the same batches for any thread count", "[data][prefetch]") {
  const Dataset d = random_dataset(53, 3, 8, 8);
  const LoaderOptions opt = options();
  const std::vector<Batch> reference = reference_stream(d, opt);
  REQUIRE(reference.size() == 14);
  for (std::int64_t threads : {0, 1, 2, 4}) {
    for (std::int64_t capacity : {1, 3, 16}) {
      INFO(threads << " threads, capacity " << capacity);
      PrefetchLoader loader(d, iota(53), opt, PrefetchOptions{threads, capacity});
      CHECK(loader.num_threads() == threads);
      CHECK(loader.batches_per_epoch() == 7);
      CHECK(loader.num_samples() == 53);
      std::size_t k = 0;
      for (std::int64_t e = 0; e < 2; ++e) {
        loader.start_epoch(e);
        Batch b;
        while (loader.next(b)) {
          REQUIRE(k < reference.size());
          REQUIRE(same_batch(b, reference[k]));
          ++k;
          CHECK(loader.position() == static_cast<std::int64_t>(k) - 7 * e);
        }
        CHECK(loader.epoch() == e);
        Batch extra;
        CHECK_FALSE(loader.next(extra));  // the end of the epoch stays the end
      }
      CHECK(k == reference.size());
    }
  }
}

TEST_CASE("PrefetchLoader::restore continues like an uninterrupted run", "[data][prefetch]") {
  const Dataset d = random_dataset(53, 3, 8, 8);
  const LoaderOptions opt = options();
  const std::vector<Batch> reference = reference_stream(d, opt);
  for (std::int64_t threads : {0, 2}) {
    std::int64_t epoch = 0, position = 0;
    {
      PrefetchLoader first(d, iota(53), opt, PrefetchOptions{threads, 3});
      first.start_epoch(1);
      Batch b;
      for (int k = 0; k < 3; ++k) {
        REQUIRE(first.next(b));
        REQUIRE(same_batch(b, reference[static_cast<std::size_t>(7 + k)]));
      }
      epoch = first.epoch();
      position = first.position();
      // Destroyed here with workers running ahead.
    }
    CHECK(epoch == 1);
    CHECK(position == 3);
    PrefetchLoader resumed(d, iota(53), opt, PrefetchOptions{threads, 3});
    resumed.restore(epoch, position);
    CHECK(resumed.epoch() == 1);
    CHECK(resumed.position() == 3);
    Batch b;
    for (std::size_t k = 10; k < 14; ++k) {
      REQUIRE(resumed.next(b));
      REQUIRE(same_batch(b, reference[k]));
    }
    CHECK_FALSE(resumed.next(b));
    // Restoring a live loader backwards drops what was prefetched.
    resumed.restore(0, 5);
    REQUIRE(resumed.next(b));
    CHECK(same_batch(b, reference[5]));
    REQUIRE_THROWS_WITH(resumed.restore(0, 8), Catch::Contains("position 8"));
  }
}

TEST_CASE("a failure while building a batch reaches the trainer", "[data][prefetch]") {
  using Catch::Contains;
  for (std::int64_t threads : {0, 1, 3}) {
    INFO(threads << " threads");
    Dataset d = random_dataset(40, 3, 8, 8);
    const Dataset original = d;
    LoaderOptions opt = options();
    opt.shuffle = false;  // batch k holds samples 8k .. 8k + 7
    PrefetchLoader loader(d, iota(40), opt, PrefetchOptions{threads, 4});
    // The dataset shrinks to 20 images before the first batch is built: batches 0 and 1 are
    // still valid, batch 2 refers to image 20.
    d.labels.resize(20);
    d.pixels.resize(static_cast<std::size_t>(20 * d.image_numel()));
    Batch b;
    REQUIRE(loader.next(b));
    REQUIRE(loader.next(b));
    CHECK(b.indices.front() == 8);
    REQUIRE_THROWS_WITH(loader.next(b), Contains("BatchIterator::batch") && Contains("index 20") &&
                                            Contains("20 images"));
    CHECK(loader.position() == 2);
    // The failure stays until the loader is restored.
    REQUIRE_THROWS_WITH(loader.next(b), Contains("index 20"));
    d = original;
    loader.restore(0, 2);
    REQUIRE(loader.next(b));
    CHECK(b.indices.front() == 16);
    REQUIRE(loader.next(b));
    REQUIRE(loader.next(b));
    CHECK(b.indices.back() == 39);
    CHECK_FALSE(loader.next(b));
  }
}

TEST_CASE("PrefetchLoader stops on request and on destruction", "[data][prefetch]") {
  const Dataset d = random_dataset(400, 3, 32, 32);
  LoaderOptions opt = options();
  opt.batch_size = 16;
  const std::vector<Batch> reference = [&] {
    BatchIterator it(d, iota(400), opt);
    std::vector<Batch> out;
    Batch b;
    while (it.next(b))
      out.push_back(b);
    return out;
  }();
  {
    PrefetchLoader loader(d, iota(400), opt, PrefetchOptions{4, 8});
    Batch b;
    REQUIRE(loader.next(b));
    // Destroyed mid-epoch while four workers are building.
  }
  { PrefetchLoader never_started(d, iota(400), opt, PrefetchOptions{2, 2}); }
  PrefetchLoader loader(d, iota(400), opt, PrefetchOptions{2, 4});
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(loader.next(b));
  loader.stop();
  loader.stop();  // idempotent
  CHECK(loader.epoch() == 0);
  CHECK(loader.position() == 2);
  REQUIRE_THROWS_WITH(loader.next(b), Catch::Contains("stopped at epoch 0 position 2"));
  loader.restore(loader.epoch(), loader.position());
  REQUIRE(loader.next(b));
  CHECK(same_batch(b, reference[2]));

  using Catch::Contains;
  REQUIRE_THROWS_WITH(PrefetchLoader(d, iota(4), opt, PrefetchOptions{-1, 2}),
                      Contains("num_threads = -1"));
  REQUIRE_THROWS_WITH(PrefetchLoader(d, iota(4), opt, PrefetchOptions{2, 0}),
                      Contains("capacity = 0"));
}
