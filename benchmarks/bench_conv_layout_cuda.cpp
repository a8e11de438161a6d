// Convolution layout benchmark: cuDNN's forward, backward-data and backward-filter convolutions
// of every convolution in the MC-Distil reference configuration (teacher resnet10, students
// resnet10_xxxs..m, C-Net resnet10_s; batch 400, 3x32x32), each timed in NCHW (the engine's
// layout) and in NHWC with the fastest algorithm cuDNN finds for it. The engine keeps NCHW
// unless this says NHWC pays: the total over one plain training step's convolutions (the
// teacher's and the C-Net's forwards, the students' forwards and backwards) in both layouts,
// and the ratio. Layout conversions are not counted: an NHWC engine would keep activations in NHWC
// throughout, with its own batch-norm and pooling kernels.
// float32; FMA-only algorithms unless --tf32 (then tensor-op algorithms may be chosen too).
// Output: one JSON object (to --json PATH too), then a table.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <cudnn.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <mcd/engine/generator.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/library_handles.h>
#include <mcd/kernels/cuda/runtime.h>

namespace cu = mcd::kernels::cuda;

namespace {

struct Geometry {
  int n, c, h, k, r, stride, pad;  // square images and filters; groups 1
  int out() const { return (h + 2 * pad - r) / stride + 1; }
  auto key() const { return std::tie(n, c, h, k, r, stride, pad); }
  bool operator<(const Geometry& o) const { return key() < o.key(); }
};

// How often a step runs each direction of a convolution.
struct Uses {
  int forward = 0, backward_data = 0, backward_filter = 0;
};

// The convolutions of one ResNet10 (CIFAR stem, one BasicBlock per stage) on 32x32 images. A
// trained network runs every convolution forward and backward (the stem needs no gradient for
// the images); a frozen one (the teacher, the C-Net outside meta steps) only forward.
void add_resnet10(std::map<Geometry, Uses>& uses, int batch, const std::vector<int>& widths,
                  bool trained) {
  auto add = [&](const Geometry& g, bool needs_input_grad) {
    Uses& u = uses[g];
    ++u.forward;
    if (trained) {
      ++u.backward_filter;
      if (needs_input_grad) ++u.backward_data;
    }
  };
  add({batch, 3, 32, widths[0], 3, 1, 1}, false);  // stem
  int planes = widths[0], size = 32;
  for (std::size_t s = 0; s < 4; ++s) {
    const int stride = s == 0 ? 1 : 2, width = widths[s];
    const int out = (size + 2 - 3) / stride + 1;
    add({batch, planes, size, width, 3, stride, 1}, true);  // block conv1
    add({batch, width, out, width, 3, 1, 1}, true);         // block conv2
    if (stride != 1 || planes != width)
      add({batch, planes, size, width, 1, stride, 0}, true);  // shortcut
    planes = width;
    size = out;
  }
}

// Teacher resnet10 and C-Net resnet10_s forward only; students resnet10_xxxs..m trained.
std::map<Geometry, Uses> reference_convolutions(int batch) {
  std::map<Geometry, Uses> uses;
  add_resnet10(uses, batch, {64, 128, 256, 512}, false);
  add_resnet10(uses, batch, {8, 16, 32, 64}, false);
  for (const std::vector<int>& w : {std::vector<int>{4, 8, 8, 16},
                                    {8, 8, 16, 16},
                                    {8, 16, 16, 32},
                                    {8, 16, 32, 64},
                                    {16, 32, 64, 128}})
    add_resnet10(uses, batch, w, true);
  return uses;
}

// Milliseconds per call of `launch`, median of 5 batches of `reps` back-to-back calls.
template <class F>
double time_ms(const cu::Stream& stream, int reps, F&& launch) {
  launch();  // warm-up
  const cu::Event start(stream.device(), true), stop(stream.device(), true);
  std::vector<double> t;
  for (int b = 0; b < 5; ++b) {
    start.record(stream.get());
    for (int i = 0; i < reps; ++i)
      launch();
    stop.record(stream.get());
    stop.synchronize();
    t.push_back(stop.elapsed_ms_since(start) / reps);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

bool allowed(cudnnMathType_t m, bool tf32) {
  return tf32 || (m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

struct LayoutTimes {
  double fwd_ms = 0, bwd_data_ms = 0, bwd_filter_ms = 0;
  int fwd_algo = -1, bwd_data_algo = -1, bwd_filter_algo = -1;
  // Milliseconds of one step's uses.
  double step(const Uses& u) const {
    return u.forward * fwd_ms + u.backward_data * bwd_data_ms + u.backward_filter * bwd_filter_ms;
  }
};

class Bench {
 public:
  Bench(const cu::Stream& stream, bool tf32, std::size_t workspace_bytes)
      : stream_(stream),
        handle_(cu::cudnn_handle(stream.device(), stream.get())),
        tf32_(tf32),
        workspace_(stream.device(), workspace_bytes, stream.get()) {
    MCD_CUDA_CHECK(cudnnCreateTensorDescriptor(&x_));
    MCD_CUDA_CHECK(cudnnCreateTensorDescriptor(&y_));
    MCD_CUDA_CHECK(cudnnCreateFilterDescriptor(&w_));
    MCD_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&conv_));
  }
  ~Bench() {
    cudnnDestroyTensorDescriptor(x_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyConvolutionDescriptor(conv_);
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  LayoutTimes run(const Geometry& g, cudnnTensorFormat_t format) {
    const int o = g.out();
    MCD_CUDA_CHECK(cudnnSetTensor4dDescriptor(x_, format, CUDNN_DATA_FLOAT, g.n, g.c, g.h, g.h));
    MCD_CUDA_CHECK(cudnnSetTensor4dDescriptor(y_, format, CUDNN_DATA_FLOAT, g.n, g.k, o, o));
    MCD_CUDA_CHECK(cudnnSetFilter4dDescriptor(w_, CUDNN_DATA_FLOAT, format, g.k, g.c, g.r, g.r));
    MCD_CUDA_CHECK(cudnnSetConvolution2dDescriptor(conv_, g.pad, g.pad, g.stride, g.stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MCD_CUDA_CHECK(cudnnSetConvolutionMathType(conv_, tf32_ ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    const std::size_t nx = std::size_t(g.n) * g.c * g.h * g.h, ny = std::size_t(g.n) * g.k * o * o,
                      nw = std::size_t(g.k) * g.c * g.r * g.r;
    const cu::DeviceBuffer x = filled(nx), y = filled(ny), w = filled(nw);
    const cu::DeviceBuffer dx(stream_.device(), nx * 4, stream_.get()),
        dw(stream_.device(), nw * 4, stream_.get());
    const float one = 1.0f, zero = 0.0f;
    void* ws = workspace_.data();
    const std::size_t ws_bytes = workspace_.size();
    const int reps = std::max(3, static_cast<int>(2e8 / (double(nx + ny) * g.k * g.r * g.r + 1)));
    LayoutTimes t;

    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    MCD_CUDA_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
        handle_, x_, x.data(), w_, w.data(), conv_, y_, y.data(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
        &n, fp, ws, ws_bytes));
    for (int i = 0; i < n; ++i)
      if (fp[i].status == CUDNN_STATUS_SUCCESS && fp[i].memory <= ws_bytes &&
          allowed(fp[i].mathType, tf32_)) {
        MCD_CUDA_CHECK(cudnnSetConvolutionMathType(conv_, fp[i].mathType));
        t.fwd_algo = fp[i].algo;
        t.fwd_ms = time_ms(stream_, reps, [&] {
          MCD_CUDA_CHECK(cudnnConvolutionForward(handle_, &one, x_, x.data(), w_, w.data(), conv_,
                                                 fp[i].algo, ws, ws_bytes, &zero, y_, y.data()));
        });
        break;
      }

    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    MCD_CUDA_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        handle_, w_, w.data(), y_, y.data(), conv_, x_, dx.data(),
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp, ws, ws_bytes));
    for (int i = 0; i < n; ++i)
      if (dp[i].status == CUDNN_STATUS_SUCCESS && dp[i].memory <= ws_bytes &&
          allowed(dp[i].mathType, tf32_)) {
        MCD_CUDA_CHECK(cudnnSetConvolutionMathType(conv_, dp[i].mathType));
        t.bwd_data_algo = dp[i].algo;
        t.bwd_data_ms = time_ms(stream_, reps, [&] {
          MCD_CUDA_CHECK(cudnnConvolutionBackwardData(handle_, &one, w_, w.data(), y_, y.data(),
                                                      conv_, dp[i].algo, ws, ws_bytes, &zero, x_,
                                                      dx.data()));
        });
        break;
      }

    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    MCD_CUDA_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        handle_, x_, x.data(), y_, y.data(), conv_, w_, dw.data(),
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp, ws, ws_bytes));
    for (int i = 0; i < n; ++i)
      if (wp[i].status == CUDNN_STATUS_SUCCESS && wp[i].memory <= ws_bytes &&
          allowed(wp[i].mathType, tf32_)) {
        MCD_CUDA_CHECK(cudnnSetConvolutionMathType(conv_, wp[i].mathType));
        t.bwd_filter_algo = wp[i].algo;
        t.bwd_filter_ms = time_ms(stream_, reps, [&] {
          MCD_CUDA_CHECK(cudnnConvolutionBackwardFilter(handle_, &one, x_, x.data(), y_, y.data(),
                                                        conv_, wp[i].algo, ws, ws_bytes, &zero, w_,
                                                        dw.data()));
        });
        break;
      }
    return t;
  }

 private:
  // n floats in [-1, 1): the times do not depend on the values, but NaNs could slow some paths.
  cu::DeviceBuffer filled(std::size_t n) {
    std::vector<float> host(n);
    mcd::Generator gen(n);
    for (float& v : host)
      v = static_cast<float>(gen.below(1u << 20)) * 0x1p-19f - 1.0f;
    cu::DeviceBuffer b(stream_.device(), n * 4, stream_.get());
    cu::copy_host_to_device(b.data(), host.data(), n * 4, stream_);
    return b;
  }

  const cu::Stream& stream_;
  cudnnHandle_t handle_;
  bool tf32_;
  cu::DeviceBuffer workspace_;
  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
};

std::string shape_of(const Geometry& g) {
  return fmt::format("{}x{}x{}x{} -> {} k{} s{}", g.n, g.c, g.h, g.h, g.k, g.r, g.stride);
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool tf32 = false;
  int batch = 400;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc)
      json_path = argv[++i];
    else if (std::strcmp(argv[i], "--tf32") == 0)
      tf32 = true;
    else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0)
      batch = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "bench_conv_layout_cuda: bad argument '%s'\nusage: bench_conv_layout_cuda "
                   "[--tf32] [--batch N >= 1] [--json PATH]\n",
                   argv[i]);
      return 2;
    }
  }
  if (cu::device_count() == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  const cu::Stream stream(0);
  Bench bench(stream, tf32, std::size_t{512} << 20);
  nlohmann::json shapes = nlohmann::json::array();
  double total_nchw = 0, total_nhwc = 0;
  fmt::print("{:<30} {:>9} {:>10} {:>10} {:>7}\n", "convolution (N C H W -> K)", "fwd/bd/bf",
             "NCHW us", "NHWC us", "ratio");
  for (const auto& [g, u] : reference_convolutions(batch)) {
    const LayoutTimes a = bench.run(g, CUDNN_TENSOR_NCHW);
    const LayoutTimes b = bench.run(g, CUDNN_TENSOR_NHWC);
    total_nchw += a.step(u);
    total_nhwc += b.step(u);
    auto entry = [](const LayoutTimes& t) {
      return nlohmann::json{{"forward_us", t.fwd_ms * 1e3},
                            {"backward_data_us", t.bwd_data_ms * 1e3},
                            {"backward_filter_us", t.bwd_filter_ms * 1e3},
                            {"algorithms", {t.fwd_algo, t.bwd_data_algo, t.bwd_filter_algo}}};
    };
    shapes.push_back({{"shape", shape_of(g)},
                      {"uses", {u.forward, u.backward_data, u.backward_filter}},
                      {"nchw", entry(a)},
                      {"nhwc", entry(b)}});
    fmt::print("{:<30} {:>9} {:>10.1f} {:>10.1f} {:>7.2f}\n", shape_of(g),
               fmt::format("{}/{}/{}", u.forward, u.backward_data, u.backward_filter),
               a.step(u) * 1e3, b.step(u) * 1e3, a.step(u) / b.step(u));
  }
  const nlohmann::json j = {{"bench", "conv_layout"},
                            {"device", cu::device_name(0)},
                            {"tf32", tf32},
                            {"batch", batch},
                            {"total_nchw_ms", total_nchw},
                            {"total_nhwc_ms", total_nhwc},
                            {"nhwc_speedup", total_nchw / total_nhwc},
                            {"shapes", shapes}};
  fmt::print("every convolution of one plain step: NCHW {:.2f} ms, NHWC {:.2f} ms, NHWC {:.2f}x\n",
             total_nchw, total_nhwc, total_nchw / total_nhwc);
  if (!json_path.empty()) {
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "bench_conv_layout_cuda: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "%s\n", j.dump().c_str());
    std::fclose(f);
  }
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
