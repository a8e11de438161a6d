// Loader throughput: images/s of BatchIterator (OpenMP inside a batch) and PrefetchLoader
// (worker threads, one batch each) at 1 and 2 threads, on CIFAR-like 32x32x3 random uint8
// images with the released CIFAR augmentation, batch 128. Each configuration first checks
// that its batches equal the synchronous iterator's, then times whole epochs (best of
// --repeats). Prints JSON lines, then a table.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mcd/data/augment.h>
#include <mcd/data/prefetch_loader.h>
#include <mcd/engine/generator.h>

using namespace mcd::data;

namespace {

struct Result {
  std::string loader, augmentation;
  int threads;
  double images_per_s, ms_per_batch;
};

Dataset cifar_like(std::int64_t n) {
  Dataset d;
  d.name = "random-cifar";
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.num_classes = 100;
  mcd::Generator gen(1);
  d.pixels.resize(static_cast<std::size_t>(n * d.image_numel()));
  for (auto& p : d.pixels)
    p = static_cast<std::uint8_t>(gen.below(256));
  for (std::int64_t i = 0; i < n; ++i)
    d.labels.push_back(i % 100);
  return d;
}

// Runs epoch `epoch` through `loader`, returning the batches' checksum (sum of first pixels).
template <class Loader>
double run_epoch(Loader& loader, std::int64_t epoch) {
  loader.start_epoch(epoch);
  Batch b;
  double checksum = 0;
  while (loader.next(b))
    checksum += static_cast<double>(b.images.template data<float>()[0]);
  return checksum;
}

template <class Loader>
Result time_loader(Loader& loader, const std::string& name, const std::string& aug, int threads,
                   int repeats, double want_checksum) {
  const double got = run_epoch(loader, 0);  // warm-up, and validation against the reference
  if (got != want_checksum) {
    std::fprintf(stderr, "bench_loader: %s with %d threads gave checksum %.9g, expected %.9g\n",
                 name.c_str(), threads, got, want_checksum);
    std::exit(1);
  }
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run_epoch(loader, 1 + r);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  const double images = static_cast<double>(loader.num_samples());
  return {name, aug, threads, images / best,
          1e3 * best / static_cast<double>(loader.batches_per_epoch())};
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t n = 20000;
  int repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--images") == 0)
      n = std::atoll(argv[i + 1]);
    else if (std::strcmp(argv[i], "--repeats") == 0)
      repeats = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: bench_loader [--images N] [--repeats R]\n");
      return 2;
    }
  }
  const Dataset d = cifar_like(n);
  std::vector<std::int64_t> indices(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    indices[static_cast<std::size_t>(i)] = i;

  std::vector<Result> results;
  for (const bool augment : {false, true}) {
    LoaderOptions opt;
    opt.batch_size = 128;
    opt.seed = 7;
    opt.normalization = cifar100_normalization();
    if (augment) opt.augmentation = cifar_augmentation();
    const std::string aug = augment ? "cifar" : "none";
    omp_set_num_threads(1);
    BatchIterator reference(d, indices, opt);
    const double checksum = run_epoch(reference, 0);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      BatchIterator it(d, indices, opt);
      results.push_back(time_loader(it, "BatchIterator(openmp)", aug, threads, repeats, checksum));
    }
    omp_set_num_threads(2);
    for (int threads : {1, 2}) {
      PrefetchLoader pf(d, indices, opt, PrefetchOptions{threads, 8});
      results.push_back(time_loader(pf, "PrefetchLoader", aug, threads, repeats, checksum));
    }
  }
  for (const Result& r : results) {
    std::printf(
        "{\"bench\": \"loader\", \"loader\": \"%s\", \"augmentation\": \"%s\", \"threads\": %d, "
        "\"batch\": 128, \"image\": [3, 32, 32], \"images\": %lld, \"images_per_s\": %.0f, "
        "\"ms_per_batch\": %.3f}\n",
        r.loader.c_str(), r.augmentation.c_str(), r.threads, static_cast<long long>(n),
        r.images_per_s, r.ms_per_batch);
  }
  std::printf("\n%-22s %-6s %7s %12s %10s\n", "loader", "aug", "threads", "images/s", "ms/batch");
  for (const Result& r : results) {
    std::printf("%-22s %-6s %7d %12.0f %10.3f\n", r.loader.c_str(), r.augmentation.c_str(),
                r.threads, r.images_per_s, r.ms_per_batch);
  }
  return 0;
}
