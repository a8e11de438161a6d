// GPU kernel lab for the production launchers: the fused distillation loss (forward + dL/dz)
// and its JVP at the MC-Distil shape (B=400, V=100, K=5), at 1000 classes (B=400, V=1000, K=5),
// at rows that fit one block's slice (B=4096, V=8192, K=1) and at a large-vocabulary shape
// (B=16384, V=32768, K=1), each with the variant the launcher picks
// (`results`, the keys summarize.py reads) and every kernel variant forced (`variants`, with
// the speed-up over the general kernel), and the multi-tensor SGD and Adam steps over a
// ResNet10-sized parameter list. Times are medians over batches of back-to-back launches
// measured with CUDA events (after warm-up), with inputs rotated across enough copies to defeat
// the 50 MB L2. Every variant is checked against the CPU kernel first (whole batch for V <= 1024,
// the first 64 rows' ce and kl otherwise). Bandwidth is quoted against the 4*B*V*(1+2K)-byte
// bound and the measured D2D copy speed.
// Usage: bench_fused_loss_cuda [--quick] [--json PATH]   (JSON to PATH, else to stdout)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <mcd/kernels/cpu/distill_loss.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/distill_loss.h>
#include <mcd/kernels/cuda/multi_tensor_optim.h>
#include <mcd/kernels/cuda/runtime.h>

namespace cu = mcd::kernels::cuda;

namespace {

using cu::FusedLossKernel;

struct Result {
  std::string name;
  std::string shape;
  double median_us = 0;
  double bytes = 0;         // bytes the op must move at least (the quoted bound)
  double actual_bytes = 0;  // bytes the kernel moves as written (DRAM, each input once)
  std::string kernel;       // the fused loss's variant ("" for the optimizers)
  double general_us = 0;    // the general kernel at the same shape (variants only)
};

__device__ std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// p[i] = uniform in [lo, hi); with log_of set, p[i] = log(that) (a stand-in log-probability).
__global__ void fill_kernel(float* p, std::int64_t n, float lo, float hi, std::uint64_t seed,
                            bool log_of) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float u = static_cast<float>(splitmix(seed * 0x100000001b3ull + i) >> 40) * 0x1p-24f;
    const float x = lo + (hi - lo) * u;
    p[i] = log_of ? logf(x) : x;
  }
}

__global__ void labels_kernel(std::int64_t* y, std::int64_t n, std::int64_t v, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = static_cast<std::int64_t>(splitmix(seed + i) % static_cast<std::uint64_t>(v));
}

void fill(float* p, std::int64_t n, float lo, float hi, std::uint64_t seed, cudaStream_t s,
          bool log_of = false) {
  fill_kernel<<<1024, 256, 0, s>>>(p, n, lo, hi, seed, log_of);
  MCD_CUDA_CHECK_LAUNCH("fill_kernel");
}

// Median over `batches` of the mean time per call of `per_batch` back-to-back calls of f(i).
template <class F>
double median_us(const cu::Stream& st, int batches, int per_batch, F&& f) {
  cu::Event start(st.device(), true), stop(st.device(), true);
  for (int i = 0; i < std::max(3, per_batch / 4); ++i)
    f(i);  // warm-up
  std::vector<double> t;
  int call = 0;
  for (int b = 0; b < batches; ++b) {
    start.record(st.get());
    for (int i = 0; i < per_batch; ++i)
      f(call++);
    stop.record(st.get());
    stop.synchronize();
    t.push_back(1e3 * stop.elapsed_ms_since(start) / per_batch);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Bytes read plus written per second by cudaMemcpyAsync device-to-device of 1 GiB.
double copy_bandwidth(const cu::Stream& st, int batches) {
  const std::size_t n = std::size_t{1} << 30;
  cu::DeviceBuffer a(st.device(), n, st.get()), b(st.device(), n, st.get());
  MCD_CUDA_CHECK(cudaMemsetAsync(a.data(), 1, n, st.get()));
  const double us = median_us(st, batches, 4, [&](int) {
    MCD_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), n, cudaMemcpyDeviceToDevice, st.get()));
  });
  return 2.0 * static_cast<double>(n) / (us * 1e-6);
}

// `copies` independent input sets, each with its own outputs and workspace.
struct LossSet {
  std::vector<cu::DeviceBuffer> logits, tangents;
  std::vector<const float*> logit_ptrs, tangent_ptrs;
  cu::DeviceBuffer qt, lqt, labels, alpha, beta, ce, kl, loss, grad, ws;
};

LossSet make_set(std::int64_t k, std::int64_t b, std::int64_t v, std::uint64_t seed,
                 const cu::Stream& st) {
  const int dev = st.device();
  const std::int64_t bv = b * v, kb = k * b;
  auto buf = [&](std::size_t bytes) { return cu::DeviceBuffer(dev, bytes, st.get()); };
  LossSet s;
  for (std::int64_t j = 0; j < k; ++j) {
    s.logits.push_back(buf(bv * 4));
    s.tangents.push_back(buf(bv * 4));
    fill(s.logits.back().as<float>(), bv, -3.f, 3.f, seed + 10 * j, st.get());
    fill(s.tangents.back().as<float>(), bv, -1.f, 1.f, seed + 10 * j + 1, st.get());
    s.logit_ptrs.push_back(s.logits.back().as<float>());
    s.tangent_ptrs.push_back(s.tangents.back().as<float>());
  }
  s.qt = buf(bv * 4);
  s.lqt = buf(bv * 4);
  fill(s.qt.as<float>(), bv, 1e-6f, 2.f / static_cast<float>(v), seed + 1000, st.get());
  fill(s.lqt.as<float>(), bv, 1e-6f, 2.f / static_cast<float>(v), seed + 1000, st.get(), true);
  s.labels = buf(b * 8);
  labels_kernel<<<64, 256, 0, st.get()>>>(s.labels.as<std::int64_t>(), b, v, seed);
  MCD_CUDA_CHECK_LAUNCH("labels_kernel");
  s.alpha = buf(kb * 4);
  s.beta = buf(kb * 4);
  fill(s.alpha.as<float>(), kb, 0.f, 1.f, seed + 2000, st.get());
  fill(s.beta.as<float>(), kb, 0.f, 1.f, seed + 3000, st.get());
  s.ce = buf(kb * 4);
  s.kl = buf(kb * 4);
  s.loss = buf(k * 4);
  s.grad = buf(k * bv * 4);
  const std::size_t wsb = cu::distill_loss_workspace_bytes(k, b);
  s.ws = buf(wsb);
  MCD_CUDA_CHECK(cudaMemsetAsync(s.ws.data(), 0, wsb, st.get()));
  return s;
}

void forward(const LossSet& s, std::int64_t k, std::int64_t b, std::int64_t v, const cu::Stream& st,
             FusedLossKernel kernel = FusedLossKernel::automatic) {
  cu::distill_loss_forward_cuda<float>(
      k, b, v, s.logit_ptrs.data(), s.qt.as<float>(), s.lqt.as<float>(),
      s.labels.as<std::int64_t>(), s.alpha.as<float>(), s.beta.as<float>(), 2.0, s.ce.as<float>(),
      s.kl.as<float>(), s.loss.as<float>(), s.grad.as<float>(), s.ws.data(), st.get(), kernel);
}

void jvp(const LossSet& s, std::int64_t k, std::int64_t b, std::int64_t v, const cu::Stream& st,
         FusedLossKernel kernel = FusedLossKernel::automatic) {
  cu::distill_loss_jvp_cuda<float>(
      k, b, v, s.logit_ptrs.data(), s.tangent_ptrs.data(), s.qt.as<float>(),
      s.labels.as<std::int64_t>(), s.alpha.as<float>(), s.beta.as<float>(), 2.0, s.ce.as<float>(),
      s.kl.as<float>(), s.loss.as<float>(), s.ws.data(), st.get(), kernel);
}

template <class T>
std::vector<T> download(const void* d, std::size_t n, const cu::Stream& st) {
  std::vector<T> h(n);
  cu::copy_device_to_host(h.data(), d, n * sizeof(T), st);
  return h;
}

bool close_to(float got, float want, double floor) {
  return std::abs(static_cast<double>(got) - want) <=
         1e-5 * std::max(std::abs(static_cast<double>(want)), floor);
}

// The first set's results against the CPU kernel: timing a wrong kernel is worthless. For
// V <= 1024 the whole batch (losses); for longer rows the first `rows` samples' ce and kl
// (the CPU kernel on the leading rows of every (B, V) array, alpha and beta gathered per student).
bool validate(const LossSet& s, std::int64_t k, std::int64_t b, std::int64_t v,
              const cu::Stream& st, FusedLossKernel kernel) {
  forward(s, k, b, v, st, kernel);
  const std::int64_t rows = v <= 1024 ? b : std::min<std::int64_t>(b, 64);
  const std::int64_t rv = rows * v, kr = k * rows;
  std::vector<std::vector<float>> z(k);
  std::vector<const float*> zp;
  for (std::int64_t j = 0; j < k; ++j) {
    z[j] = download<float>(s.logit_ptrs[j], rv, st);
    zp.push_back(z[j].data());
  }
  const auto qt = download<float>(s.qt.data(), rv, st), lqt = download<float>(s.lqt.data(), rv, st);
  const auto all_alpha = download<float>(s.alpha.data(), k * b, st);
  const auto all_beta = download<float>(s.beta.data(), k * b, st);
  const auto gpu_ce = download<float>(s.ce.data(), k * b, st);
  const auto gpu_kl = download<float>(s.kl.data(), k * b, st);
  const auto gpu_loss = download<float>(s.loss.data(), k, st);
  const auto y = download<std::int64_t>(s.labels.data(), rows, st);
  std::vector<float> alpha(kr), beta(kr), ce(kr), kl(kr), loss(k);
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t i = 0; i < rows; ++i) {
      alpha[j * rows + i] = all_alpha[j * b + i];
      beta[j * rows + i] = all_beta[j * b + i];
    }
  mcd::kernels::cpu::distill_loss_forward_cpu<float>(k, rows, v, zp.data(), qt.data(), lqt.data(),
                                                     y.data(), alpha.data(), beta.data(), 2.0,
                                                     ce.data(), kl.data(), loss.data(), nullptr);
  const char* name = cu::fused_loss_kernel_name(kernel);
  for (std::int64_t j = 0; j < k; ++j) {
    if (rows == b && !close_to(gpu_loss[j], loss[j], 1e-1)) {
      std::fprintf(stderr, "validation failed (%s): student %ld loss %.9g (cuda) vs %.9g (cpu)\n",
                   name, static_cast<long>(j), gpu_loss[j], loss[j]);
      return false;
    }
    for (std::int64_t i = 0; i < rows; ++i)
      if (!close_to(gpu_ce[j * b + i], ce[j * rows + i], 1.0) ||
          !close_to(gpu_kl[j * b + i], kl[j * rows + i], 1.0)) {
        std::fprintf(stderr,
                     "validation failed (%s): student %ld row %ld ce %.9g kl %.9g (cuda) vs "
                     "%.9g %.9g (cpu)\n",
                     name, static_cast<long>(j), static_cast<long>(i), gpu_ce[j * b + i],
                     gpu_kl[j * b + i], ce[j * rows + i], kl[j * rows + i]);
        return false;
      }
  }
  return true;
}

// ResNet10 for 100 classes at widths [64, 128, 256, 512], one BasicBlock per stage: conv
// weights, BatchNorm weight and bias, the 1x1 downsample convolutions, the final linear layer.
std::vector<std::int64_t> resnet10_parameter_sizes() {
  std::vector<std::int64_t> sizes = {64 * 3 * 9, 64, 64};
  const int widths[] = {64, 128, 256, 512};
  int in = 64;
  for (int w : widths) {
    sizes.insert(sizes.end(), {static_cast<std::int64_t>(w) * in * 9, w, w,
                               static_cast<std::int64_t>(w) * w * 9, w, w});
    if (w != in) sizes.insert(sizes.end(), {static_cast<std::int64_t>(w) * in, w, w});
    in = w;
  }
  sizes.insert(sizes.end(), {512 * 100, 100});
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_path = argv[++i];
  }
  if (cu::device_count() == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  const int batches = quick ? 7 : 21;
  cu::Stream st(0);
  const double copy_bw = copy_bandwidth(st, batches);
  std::vector<Result> results;
  bool valid = true;

  struct Shape {
    std::int64_t k, b, v;
    int copies, per_batch;
  };
  std::vector<Result> variants;
  for (const Shape& sh : {Shape{5, 400, 100, 32, 200}, Shape{5, 400, 1000, 8, 100},
                          Shape{1, 4096, 8192, 1, 10}, Shape{1, 16384, 32768, 1, 5}}) {
    std::vector<LossSet> sets;
    for (int c = 0; c < sh.copies; ++c)
      sets.push_back(make_set(sh.k, sh.b, sh.v, 17 + 1000 * c, st));
    const std::string shape =
        "B=" + std::to_string(sh.b) + " V=" + std::to_string(sh.v) + " K=" + std::to_string(sh.k);
    const double bv4 = 4.0 * static_cast<double>(sh.b * sh.v);
    const double bound = bv4 * (1 + 2 * sh.k);
    const std::string picked =
        cu::fused_loss_kernel_name(cu::fused_loss_automatic_kernel(sh.v, sizeof(float)));
    // The automatic choice first: it is what the op tables run and what summarize.py reads.
    std::vector<FusedLossKernel> kernels = {FusedLossKernel::automatic};
    for (const FusedLossKernel kn : cu::kFusedLossKernels)
      if (cu::fused_loss_kernel_applies(kn, sh.v, sizeof(float))) kernels.push_back(kn);
    double general_f = 0, general_j = 0;
    for (const FusedLossKernel kn : kernels) {
      try {
        valid = validate(sets[0], sh.k, sh.b, sh.v, st, kn) && valid;
        const bool log_of_prob = kn == FusedLossKernel::row_split_log_prob;
        const double f = median_us(st, batches, sh.per_batch, [&](int i) {
          forward(sets[i % sh.copies], sh.k, sh.b, sh.v, st, kn);
        });
        // The JVP never reads log-probabilities: row_split_log_prob's JVP is row_split's.
        const double j = log_of_prob ? 0.0 : median_us(st, batches, sh.per_batch, [&](int i) {
          jvp(sets[i % sh.copies], sh.k, sh.b, sh.v, st, kn);
        });
        if (kn == FusedLossKernel::general) {
          general_f = f;
          general_j = j;
        }
        const double fwd_bytes = bv4 * ((log_of_prob ? 1 : 2) + 2 * sh.k);
        if (kn == FusedLossKernel::automatic) {
          results.push_back(
              {"distill_loss_forward", shape, f, bound, bv4 * (2 + 2 * sh.k), picked, 0});
          results.push_back({"distill_loss_jvp", shape, j, bound, bound, picked, 0});
          continue;
        }
        const std::string name = cu::fused_loss_kernel_name(kn);
        variants.push_back({"distill_loss_forward", shape, f, bound, fwd_bytes, name, 0});
        if (!log_of_prob) variants.push_back({"distill_loss_jvp", shape, j, bound, bound, name, 0});
      } catch (const std::exception& e) {
        // One variant that cannot run (a launch refused) must not cost the others' numbers; an
        // error that breaks the device stops the rest at the next call anyway.
        std::fprintf(stderr, "bench_fused_loss_cuda: %s at %s failed: %s\n",
                     cu::fused_loss_kernel_name(kn), shape.c_str(), e.what());
        valid = false;
      }
    }
    for (Result& r : variants)
      if (r.shape == shape) r.general_us = r.name == "distill_loss_forward" ? general_f : general_j;
  }

  // Multi-tensor optimizers: slots param, grad, state, state.
  const std::vector<std::int64_t> sizes = resnet10_parameter_sizes();
  std::vector<cu::DeviceBuffer> bufs;
  std::vector<cu::TensorSlots> slots;
  std::int64_t numel = 0;
  for (std::int64_t n : sizes) {
    cu::TensorSlots s;
    for (int j = 0; j < 4; ++j) {
      bufs.emplace_back(0, n * 4, st.get());
      fill(bufs.back().as<float>(), n, j == 3 ? 0.f : -1.f, 1.f, 77 + j, st.get());
      s.ptr[j] = bufs.back().data();
    }
    s.numel = n;
    numel += n;
    slots.push_back(s);
  }
  const cu::MultiTensorList list(slots, st);
  const std::string pshape =
      std::to_string(sizes.size()) + " tensors, " + std::to_string(numel) + " floats";
  const double sgd = median_us(st, batches, 20, [&](int) {
    cu::sgd_step_cuda<float>(list, {0.1, 0.9, 0.0, 5e-4, true, true}, st.get());
  });
  results.push_back({"sgd_step (nesterov, wd)", pshape, sgd, 20.0 * numel, 20.0 * numel, "", 0});
  const double adam = median_us(st, batches, 20, [&](int i) {
    cu::adam_step_cuda<float>(list, {1e-3, 0.9, 0.999, 1e-8, 1e-4, true, i + 1}, st.get());
  });
  results.push_back({"adamw_step", pshape, adam, 28.0 * numel, 28.0 * numel, "", 0});
  st.synchronize();

  // JSON, then the tables.
  // A JSON number, or null where it is not finite (a time of 0 makes every rate infinite).
  auto num = [](double x) { return std::isfinite(x) ? std::to_string(x) : std::string("null"); };
  auto entry = [&](const Result& r) {
    const double bw = r.bytes / (r.median_us * 1e-6);
    std::string e =
        "{\"name\": \"" + r.name + "\", \"shape\": \"" + r.shape +
        "\", \"median_us\": " + num(r.median_us) + ", \"bound_bytes\": " + num(r.bytes) +
        ", \"actual_bytes\": " + num(r.actual_bytes) + ", \"bound_gbs\": " + num(bw / 1e9) +
        ", \"fraction_of_copy\": " + num(bw / copy_bw) +
        ", \"actual_fraction_of_copy\": " + num(r.actual_bytes / (r.median_us * 1e-6) / copy_bw);
    if (!r.kernel.empty()) e += ", \"kernel\": \"" + r.kernel + "\"";
    if (r.general_us > 0) e += ", \"speedup_over_general\": " + num(r.general_us / r.median_us);
    return e + "}";
  };
  std::string json = "{\"device\": \"" + cu::device_name(0) +
                     "\", \"validated\": " + (valid ? "true" : "false") +
                     ", \"copy_bandwidth_gbs\": " + num(copy_bw / 1e9) + ", \"results\": [";
  for (std::size_t i = 0; i < results.size(); ++i)
    json += std::string(i ? ", " : "") + entry(results[i]);
  json += "], \"variants\": [";
  for (std::size_t i = 0; i < variants.size(); ++i)
    json += std::string(i ? ", " : "") + entry(variants[i]);
  json += "]}\n";
  if (json_path.empty()) {
    std::fputs(json.c_str(), stdout);
  } else if (FILE* f = std::fopen(json_path.c_str(), "w")) {
    std::fputs(json.c_str(), f);
    std::fclose(f);
  }
  std::printf("\n%s, D2D copy %.0f GB/s (read + write)%s\n", cu::device_name(0).c_str(),
              copy_bw / 1e9, valid ? "" : "  VALIDATION FAILED");
  std::printf("%-26s %-32s %-13s %10s %10s %8s\n", "op", "shape", "kernel", "median us",
              "bound GB/s", "of copy");
  for (const Result& r : results) {
    const double bw = r.bytes / (r.median_us * 1e-6);
    std::printf("%-26s %-32s %-13s %10.2f %10.0f %7.0f%%\n", r.name.c_str(), r.shape.c_str(),
                r.kernel.c_str(), r.median_us, bw / 1e9, 100.0 * bw / copy_bw);
  }
  std::printf("\nfused loss variants (forced); of copy: on the bound / on the bytes moved\n");
  std::printf("%-22s %-22s %-18s %10s %8s %8s %10s\n", "op", "shape", "kernel", "median us",
              "bound", "moved", "vs general");
  for (const Result& r : variants) {
    const double t = r.median_us * 1e-6;
    std::printf("%-22s %-22s %-18s %10.2f %7.0f%% %7.0f%% %9.2fx\n", r.name.c_str(),
                r.shape.c_str(), r.kernel.c_str(), r.median_us, 100.0 * r.bytes / t / copy_bw,
                100.0 * r.actual_bytes / t / copy_bw, r.general_us / r.median_us);
  }
  return valid ? 0 : 1;
}
