// Times mcd::conv2d (the production op, float32, CPU) forward and forward+backward on the
// convolution shapes of a CIFAR ResNet at batch 128. Prints one JSON object per layer, then a
// table. FLOPs: forward 2*N*Cout*Hout*Wout*Cin/groups*kh*kw, backward twice the forward.
// fwd+bwd includes the loss sum(y * r); loss_ms is that loss alone.
// Usage: bench_conv2d [--batch N] [--reps R]   (threads: OMP_NUM_THREADS)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <omp.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/conv.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/kernels/cpu/gemm.h>

namespace {

struct Layer {
  const char* name;
  std::int64_t c_in, c_out, size, kernel, stride, pad, groups;
};

// The convolutions of a CIFAR ResNet (widths 16/32/64), plus a depthwise and a pointwise
// layer for the direct and the im2col-free paths.
const std::vector<Layer> kLayers = {
    {"stem 3->16 32x32", 3, 16, 32, 3, 1, 1, 1},    {"16->16 32x32", 16, 16, 32, 3, 1, 1, 1},
    {"16->32 s2 32x32", 16, 32, 32, 3, 2, 1, 1},    {"16->32 1x1 s2 down", 16, 32, 32, 1, 2, 0, 1},
    {"32->32 16x16", 32, 32, 16, 3, 1, 1, 1},       {"32->64 s2 16x16", 32, 64, 16, 3, 2, 1, 1},
    {"32->64 1x1 s2 down", 32, 64, 16, 1, 2, 0, 1}, {"64->64 8x8", 64, 64, 8, 3, 1, 1, 1},
    {"dw 64 3x3 16x16", 64, 64, 16, 3, 1, 1, 64},   {"pw 64->64 1x1 16x16", 64, 64, 16, 1, 1, 0, 1},
};

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

// Median wall time of `reps` runs of f after one warm-up run.
template <class F>
double median_ms(int reps, F&& f) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_ms();
    f();
    t.push_back(now_ms() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Result {
  const Layer* layer;
  std::int64_t out_size;
  double gflop_fwd, fwd_ms, fwdbwd_ms, loss_ms;
};

}  // namespace

int main(int argc, char** argv) {
  std::int64_t batch = 128;
  int reps = 7;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
      batch = std::atoll(argv[++i]);
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      fmt::print(stderr, "usage: {} [--batch N] [--reps R]\n", argv[0]);
      return 2;
    }
  }
  const int threads = omp_get_max_threads();
  const char* gemm = mcd::kernels::cpu::gemm_variant();
  mcd::Generator gen(1);
  std::vector<Result> results;

  for (const Layer& l : kLayers) {
    const std::int64_t out = (l.size + 2 * l.pad - l.kernel) / l.stride + 1;
    const mcd::Conv2dOptions o{l.stride, l.stride, l.pad, l.pad, l.groups};
    mcd::Tensor x = mcd::Tensor::randn({batch, l.c_in, l.size, l.size}, gen);
    mcd::Tensor w = mcd::Tensor::randn({l.c_out, l.c_in / l.groups, l.kernel, l.kernel}, gen);
    mcd::Tensor b = mcd::Tensor::randn({l.c_out}, gen);
    const mcd::Tensor r = mcd::Tensor::randn({batch, l.c_out, out, out}, gen);

    double fwd_ms = 0;
    {
      mcd::NoGradGuard no_grad;
      fwd_ms = median_ms(reps, [&] { (void)mcd::conv2d(x, w, b, o); });
    }
    // Every input requires grad, so backward computes dx, dw and db: 2x the forward FLOPs.
    for (mcd::Tensor* t : {&x, &w, &b})
      t->set_requires_grad(true);
    const double fwdbwd_ms = median_ms(reps, [&] {
      for (mcd::Tensor* t : {&x, &w, &b})
        t->zero_grad();
      const mcd::Tensor y = mcd::conv2d(x, w, b, o);
      mcd::backward({mcd::sum(mcd::mul(y, r))});
    });
    // The loss alone (mul, sum and their backward on a leaf shaped like y), so that the
    // convolution's share of the forward+backward time can be read off.
    mcd::Tensor y_leaf = mcd::Tensor::randn(r.shape(), gen);
    y_leaf.set_requires_grad(true);
    const double loss_ms = median_ms(reps, [&] {
      y_leaf.zero_grad();
      mcd::backward({mcd::sum(mcd::mul(y_leaf, r))});
    });
    if (!std::isfinite(w.grad().to_doubles()[0])) {
      fmt::print(stderr, "bench_conv2d: non-finite weight gradient for {}\n", l.name);
      return 1;
    }

    const double gflop = 2.0 * static_cast<double>(batch * l.c_out * out * out) *
                         static_cast<double>(l.c_in / l.groups * l.kernel * l.kernel) * 1e-9;
    results.push_back({&l, out, gflop, fwd_ms, fwdbwd_ms, loss_ms});
    fmt::print(
        "{{\"bench\": \"conv2d\", \"layer\": \"{}\", \"dtype\": \"float32\", \"batch\": {}, "
        "\"c_in\": {}, \"c_out\": {}, \"in_hw\": {}, \"out_hw\": {}, \"kernel\": {}, "
        "\"stride\": {}, \"pad\": {}, \"groups\": {}, \"threads\": {}, \"gemm\": \"{}\", "
        "\"fwd_ms\": {:.4f}, \"fwd_images_per_s\": {:.1f}, \"fwd_gflops\": {:.2f}, "
        "\"fwdbwd_ms\": {:.4f}, \"fwdbwd_images_per_s\": {:.1f}, \"fwdbwd_gflops\": {:.2f}, "
        "\"loss_ms\": {:.4f}}}\n",
        l.name, batch, l.c_in, l.c_out, l.size, out, l.kernel, l.stride, l.pad, l.groups, threads,
        gemm, fwd_ms, batch / (fwd_ms * 1e-3), gflop / (fwd_ms * 1e-3), fwdbwd_ms,
        batch / (fwdbwd_ms * 1e-3), 3 * gflop / (fwdbwd_ms * 1e-3), loss_ms);
  }

  fmt::print("\nconv2d float32, batch {}, {} threads, gemm {}, median of {}\n", batch, threads,
             gemm, reps);
  fmt::print("{:<22} {:>10} {:>10} {:>9} {:>12} {:>10} {:>9} {:>9}\n", "layer", "fwd ms", "img/s",
             "GFLOP/s", "fwd+bwd ms", "img/s", "GFLOP/s", "loss ms");
  for (const Result& res : results)
    fmt::print("{:<22} {:>10.3f} {:>10.0f} {:>9.1f} {:>12.3f} {:>10.0f} {:>9.1f} {:>9.3f}\n",
               res.layer->name, res.fwd_ms, batch / (res.fwd_ms * 1e-3),
               res.gflop_fwd / (res.fwd_ms * 1e-3), res.fwdbwd_ms, batch / (res.fwdbwd_ms * 1e-3),
               3 * res.gflop_fwd / (res.fwdbwd_ms * 1e-3), res.loss_ms);
  return 0;
}
