// conv2d on cuDNN's convolution API (CPU twin: kernels/cpu/conv2d.cpp). Algorithms are chosen
// once per (geometry, dtype, direction, TF32 and determinism settings) and cached: by timing
// every candidate on the device (cudnnFind*, as PyTorch's cudnn.benchmark), or, with
// set_conv_deterministic(true), from cuDNN's heuristics with deterministic algorithms first.
// Timing matters: for the small-channel weight gradients of the students, the heuristics'
// first deterministic choice measured about ten times slower than the fastest algorithm.
// FFT and Winograd algorithms are never used: they round differently from a direct sum, and
// the CPU parity tests hold the result to float32 rounding of direct sums.
#include <mcd/kernels/cuda/conv2d.h>

#include <array>
#include <climits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/library_handles.h>

namespace mcd::kernels::cuda {
namespace {

using cpu::Conv2dGeometry;

enum class Direction { Forward, BackwardData, BackwardFilter };

int as_int(std::int64_t v) {
  MCD_CUDA_REQUIRE(v >= 0 && v <= INT_MAX,
                   "conv2d: extent " + std::to_string(v) + " is outside cuDNN's int range");
  return static_cast<int>(v);
}

std::string describe(const Conv2dGeometry& g) {
  return "x (" + std::to_string(g.batch) + ", " + std::to_string(g.in_channels) + ", " +
         std::to_string(g.in_h) + ", " + std::to_string(g.in_w) + "), w (" +
         std::to_string(g.out_channels) + ", " + std::to_string(g.in_per_group()) + ", " +
         std::to_string(g.kernel_h) + ", " + std::to_string(g.kernel_w) + "), stride (" +
         std::to_string(g.stride_h) + ", " + std::to_string(g.stride_w) + "), padding (" +
         std::to_string(g.pad_h) + ", " + std::to_string(g.pad_w) + "), groups " +
         std::to_string(g.groups);
}

template <class T>
constexpr cudnnDataType_t data_type() {
  return std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
}

// The math type every float32 algorithm must run with when TF32 is off: FMA only (cuDNN's
// DEFAULT_MATH permits TF32 tensor cores on Ampere and later).
template <class T>
cudnnMathType_t base_math() {
  return std::is_same_v<T, float> && !allow_tf32() ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

// The descriptors of one geometry (x, y, w, the convolution) and the bias (1, C_out, 1, 1).
struct Descriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  Descriptors(const Conv2dGeometry& g, cudnnDataType_t type) {
    MCD_CUDA_CHECK(cudnnCreateTensorDescriptor(&x));
    MCD_CUDA_CHECK(cudnnCreateTensorDescriptor(&y));
    MCD_CUDA_CHECK(cudnnCreateTensorDescriptor(&bias));
    MCD_CUDA_CHECK(cudnnCreateFilterDescriptor(&w));
    MCD_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    MCD_CUDA_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, type, as_int(g.batch),
                                              as_int(g.in_channels), as_int(g.in_h),
                                              as_int(g.in_w)));
    MCD_CUDA_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, type, as_int(g.batch),
                                              as_int(g.out_channels), as_int(g.out_h),
                                              as_int(g.out_w)));
    MCD_CUDA_CHECK(
        cudnnSetTensor4dDescriptor(bias, CUDNN_TENSOR_NCHW, type, 1, as_int(g.out_channels), 1, 1));
    MCD_CUDA_CHECK(cudnnSetFilter4dDescriptor(w, type, CUDNN_TENSOR_NCHW, as_int(g.out_channels),
                                              as_int(g.in_per_group()), as_int(g.kernel_h),
                                              as_int(g.kernel_w)));
    MCD_CUDA_CHECK(cudnnSetConvolution2dDescriptor(conv, as_int(g.pad_h), as_int(g.pad_w),
                                                   as_int(g.stride_h), as_int(g.stride_w), 1, 1,
                                                   CUDNN_CROSS_CORRELATION, type));
    MCD_CUDA_CHECK(cudnnSetConvolutionGroupCount(conv, as_int(g.groups)));
  }
  ~Descriptors() {
    // Destruction cannot fail for valid descriptors; errors are ignored in a destructor.
    cudnnDestroyConvolutionDescriptor(conv);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyTensorDescriptor(bias);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(x);
  }
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
};

struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  std::size_t workspace = 0;
};

// The device is part of the key: a choice timed on one GPU need not suit (or exist on) another.
using Key = std::array<std::int64_t, 18>;

Key make_key(const Conv2dGeometry& g, cudnnDataType_t type, Direction dir, int device) {
  return {device,
          g.batch,
          g.in_channels,
          g.in_h,
          g.in_w,
          g.out_channels,
          g.kernel_h,
          g.kernel_w,
          g.stride_h,
          g.stride_w,
          g.pad_h,
          g.pad_w,
          g.groups,
          g.out_h,
          g.out_w,
          static_cast<std::int64_t>(type),
          static_cast<std::int64_t>(dir),
          (allow_tf32() ? 1 : 0) + (conv_deterministic() ? 2 : 0)};
}

bool is_tensor_op(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

bool excluded(Direction dir, int algo) {
  switch (dir) {
    case Direction::Forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    case Direction::BackwardData:
      return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
             algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
             algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
             algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    case Direction::BackwardFilter:
      return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
             algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
             algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
  }
  return true;
}

// Workspace bytes of `algo` for `dir`, or the status saying the combination is unsupported.
cudnnStatus_t workspace_size(cudnnHandle_t h, const Descriptors& d, Direction dir, int algo,
                             std::size_t* bytes) {
  switch (dir) {
    case Direction::Forward:
      return cudnnGetConvolutionForwardWorkspaceSize(
          h, d.x, d.w, d.conv, d.y, static_cast<cudnnConvolutionFwdAlgo_t>(algo), bytes);
    case Direction::BackwardData:
      return cudnnGetConvolutionBackwardDataWorkspaceSize(
          h, d.w, d.y, d.conv, d.x, static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), bytes);
    case Direction::BackwardFilter:
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, d.x, d.y, d.conv, d.w, static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), bytes);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

// cuDNN's ranked candidates for `dir` as (algo, status, determinism, math type).
struct Candidate {
  int algo;
  cudnnStatus_t status;
  cudnnDeterminism_t determinism;
  cudnnMathType_t math;
};

template <class Perf, class Query>
std::vector<Candidate> collect(int count, Query&& query) {
  std::vector<Perf> perf(static_cast<std::size_t>(count));
  int returned = 0;
  MCD_CUDA_CHECK(query(count, &returned, perf.data()));
  std::vector<Candidate> out;
  for (int i = 0; i < returned; ++i)
    out.push_back(
        {static_cast<int>(perf[i].algo), perf[i].status, perf[i].determinism, perf[i].mathType});
  return out;
}

// Every algorithm timed on the device, fastest first (cuDNN allocates its own scratch memory
// and synchronises: once per shape).
std::vector<Candidate> timed_candidates(cudnnHandle_t h, const Descriptors& d, Direction dir) {
  switch (dir) {
    case Direction::Forward:
      return collect<cudnnConvolutionFwdAlgoPerf_t>(
          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, [&](int n, int* r, cudnnConvolutionFwdAlgoPerf_t* p) {
            return cudnnFindConvolutionForwardAlgorithm(h, d.x, d.w, d.conv, d.y, n, r, p);
          });
    case Direction::BackwardData:
      return collect<cudnnConvolutionBwdDataAlgoPerf_t>(
          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
          [&](int n, int* r, cudnnConvolutionBwdDataAlgoPerf_t* p) {
            return cudnnFindConvolutionBackwardDataAlgorithm(h, d.w, d.y, d.conv, d.x, n, r, p);
          });
    case Direction::BackwardFilter:
      return collect<cudnnConvolutionBwdFilterAlgoPerf_t>(
          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
          [&](int n, int* r, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
            return cudnnFindConvolutionBackwardFilterAlgorithm(h, d.x, d.y, d.conv, d.w, n, r, p);
          });
  }
  return {};
}

std::vector<Candidate> candidates(cudnnHandle_t h, const Descriptors& d, Direction dir) {
  switch (dir) {
    case Direction::Forward:
      return collect<cudnnConvolutionFwdAlgoPerf_t>(
          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, [&](int n, int* r, cudnnConvolutionFwdAlgoPerf_t* p) {
            return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, n, r, p);
          });
    case Direction::BackwardData:
      return collect<cudnnConvolutionBwdDataAlgoPerf_t>(
          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
          [&](int n, int* r, cudnnConvolutionBwdDataAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, n, r, p);
          });
    case Direction::BackwardFilter:
      return collect<cudnnConvolutionBwdFilterAlgoPerf_t>(
          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
          [&](int n, int* r, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, n, r, p);
          });
  }
  return {};
}

// The cached choice for (g, T, dir) on `device` (the current one); chosen on first use.
// Deterministic algorithms first, in cuDNN's order; an algorithm counts only if its workspace query
// accepts it with the math type it will run with. Leaves d.conv set to the chosen math type.
// Timing the candidates runs them and synchronizes, which a graph capture forbids: a shape first
// met while `stream` is capturing gets cuDNN's heuristic choice (host-side queries only), not
// cached, so that its first eager use still times the candidates.
template <class T>
Choice choose(cudnnHandle_t h, const Conv2dGeometry& g, Descriptors& d, Direction dir, int device,
              cudaStream_t stream) {
  static std::mutex mutex;
  static std::map<Key, Choice> cache;
  const Key key = make_key(g, data_type<T>(), dir, device);
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      MCD_CUDA_CHECK(cudnnSetConvolutionMathType(d.conv, it->second.math));
      return it->second;
    }
  }
  const cudnnMathType_t base = base_math<T>();
  const bool fma_only = base == CUDNN_FMA_MATH;
  MCD_CUDA_CHECK(cudnnSetConvolutionMathType(d.conv, base));
  const bool deterministic = conv_deterministic();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MCD_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  const bool timed = !deterministic && capture == cudaStreamCaptureStatusNone;
  const std::vector<Candidate> found = timed ? timed_candidates(h, d, dir) : candidates(h, d, dir);
  for (const bool deterministic_only : {deterministic, false})
    for (const Candidate& c : found) {
      if (c.status != CUDNN_STATUS_SUCCESS || excluded(dir, c.algo)) continue;
      if (deterministic_only && c.determinism != CUDNN_DETERMINISTIC) continue;
      if (fma_only && is_tensor_op(c.math)) continue;
      const cudnnMathType_t math = fma_only ? CUDNN_FMA_MATH : c.math;
      MCD_CUDA_CHECK(cudnnSetConvolutionMathType(d.conv, math));
      std::size_t bytes = 0;
      if (workspace_size(h, d, dir, c.algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
      const Choice choice{c.algo, math, bytes};
      if (timed || deterministic) {
        std::lock_guard<std::mutex> lock(mutex);
        cache[key] = choice;
      }
      return choice;
    }
  throw_error("conv2d: cuDNN offers no usable algorithm (direction " +
              std::to_string(static_cast<int>(dir)) + ") for " + describe(g));
}

template <class T>
struct Scalars {
  T one = 1, zero = 0;
};

}  // namespace

template <class T>
void conv2d_forward_cuda(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                         int device, cudaStream_t stream) {
  if (g.batch * g.out_channels * g.out_h * g.out_w == 0) return;
  cudnnHandle_t h = cudnn_handle(device, stream);
  Descriptors d(g, data_type<T>());
  const Choice c = choose<T>(h, g, d, Direction::Forward, device, stream);
  DeviceBuffer workspace(device, c.workspace, stream);
  const Scalars<T> s;
  MCD_CUDA_CHECK(cudnnConvolutionForward(h, &s.one, d.x, x, d.w, w, d.conv,
                                         static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
                                         workspace.data(), c.workspace, &s.zero, d.y, y));
  if (bias != nullptr) MCD_CUDA_CHECK(cudnnAddTensor(h, &s.one, d.bias, bias, &s.one, d.y, y));
}

template <class T>
void conv2d_backward_input_cuda(const Conv2dGeometry& g, const T* dy, const T* w, T* dx, int device,
                                cudaStream_t stream) {
  if (g.batch * g.in_channels * g.in_h * g.in_w == 0) return;
  cudnnHandle_t h = cudnn_handle(device, stream);
  Descriptors d(g, data_type<T>());
  const Choice c = choose<T>(h, g, d, Direction::BackwardData, device, stream);
  DeviceBuffer workspace(device, c.workspace, stream);
  const Scalars<T> s;
  MCD_CUDA_CHECK(cudnnConvolutionBackwardData(h, &s.one, d.w, w, d.y, dy, d.conv,
                                              static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                                              workspace.data(), c.workspace, &s.zero, d.x, dx));
}

template <class T>
void conv2d_backward_weight_cuda(const Conv2dGeometry& g, const T* x, const T* dy, T* dw,
                                 int device, cudaStream_t stream) {
  const std::int64_t n = g.out_channels * g.in_per_group() * g.kernel_h * g.kernel_w;
  if (n == 0) return;
  if (g.batch * g.out_h * g.out_w == 0) {  // an empty sum
    MCD_CUDA_CHECK(cudaMemsetAsync(dw, 0, static_cast<std::size_t>(n) * sizeof(T), stream));
    return;
  }
  cudnnHandle_t h = cudnn_handle(device, stream);
  Descriptors d(g, data_type<T>());
  const Choice c = choose<T>(h, g, d, Direction::BackwardFilter, device, stream);
  DeviceBuffer workspace(device, c.workspace, stream);
  const Scalars<T> s;
  MCD_CUDA_CHECK(cudnnConvolutionBackwardFilter(
      h, &s.one, d.x, x, d.y, dy, d.conv, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
      workspace.data(), c.workspace, &s.zero, d.w, dw));
}

template <class T>
void conv2d_backward_bias_cuda(const Conv2dGeometry& g, const T* dy, T* db, int device,
                               cudaStream_t stream) {
  if (g.out_channels == 0) return;
  if (g.batch * g.out_h * g.out_w == 0) {
    MCD_CUDA_CHECK(
        cudaMemsetAsync(db, 0, static_cast<std::size_t>(g.out_channels) * sizeof(T), stream));
    return;
  }
  cudnnHandle_t h = cudnn_handle(device, stream);
  Descriptors d(g, data_type<T>());
  const Scalars<T> s;
  MCD_CUDA_CHECK(cudnnConvolutionBackwardBias(h, &s.one, d.y, dy, &s.zero, d.bias, db));
}

#define MCD_INSTANTIATE_CONV2D_CUDA(T)                                                             \
  template void conv2d_forward_cuda<T>(const Conv2dGeometry&, const T*, const T*, const T*, T*,    \
                                       int, cudaStream_t);                                         \
  template void conv2d_backward_input_cuda<T>(const Conv2dGeometry&, const T*, const T*, T*, int,  \
                                              cudaStream_t);                                       \
  template void conv2d_backward_weight_cuda<T>(const Conv2dGeometry&, const T*, const T*, T*, int, \
                                               cudaStream_t);                                      \
  template void conv2d_backward_bias_cuda<T>(const Conv2dGeometry&, const T*, T*, int,             \
                                             cudaStream_t);
MCD_INSTANTIATE_CONV2D_CUDA(float)
MCD_INSTANTIATE_CONV2D_CUDA(double)
#undef MCD_INSTANTIATE_CONV2D_CUDA

}  // namespace mcd::kernels::cuda
