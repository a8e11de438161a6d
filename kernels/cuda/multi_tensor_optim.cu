// Multi-tensor SGD and Adam (CPU twins: engine/src/optim/sgd.cpp, adam.cpp). The table holds
// the tensors' slots, then (tensor, start) per chunk; block c updates chunk c. Every product,
// sum and quotient goes through a round-to-nearest intrinsic, which nvcc never fuses, in the
// CPU loop's order, so a float64 or float32 step equals the CPU step bit for bit.
#include <mcd/kernels/cuda/multi_tensor_optim.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <mcd/kernels/cuda/check.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

using namespace exact;  // every operation rounded alone, as on the CPU

constexpr int kThreads = 256;

struct Chunk {
  std::int64_t tensor;
  std::int64_t start;
};

template <class T>
struct SgdCoeffs {
  T lr, weight_decay, momentum, one_minus_dampening;
  bool wd, m, hb, n;  // weight decay, momentum, an existing buffer, Nesterov
};

template <class T>
struct AdamCoeffs {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay, neg_step_size, bias2_sqrt,
      eps;
  bool l2, decoupled;
};

// Calls f(slots, i) for every element i of the block's chunk.
template <class F>
__device__ void for_chunk(const void* table, std::int64_t num_tensors, F&& f) {
  const auto* tensors = static_cast<const TensorSlots*>(table);
  const auto* chunks = reinterpret_cast<const Chunk*>(tensors + num_tensors);
  const Chunk ch = chunks[blockIdx.x];
  const TensorSlots& t = tensors[ch.tensor];
  const std::int64_t end = min(t.numel, ch.start + MultiTensorList::kChunk);
  for (std::int64_t i = ch.start + threadIdx.x; i < end; i += blockDim.x)
    f(t, i);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    sgd_step_kernel(const void* table, std::int64_t num_tensors, const SgdCoeffs<T> c) {
  for_chunk(table, num_tensors, [&](const TensorSlots& t, std::int64_t i) {
    T* p = static_cast<T*>(t.ptr[0]);
    const T* g = static_cast<const T*>(t.ptr[1]);
    T* buf = static_cast<T*>(t.ptr[2]);
    const T pi = p[i];
    T d = g[i];
    if (c.wd) d = add(d, mul(c.weight_decay, pi));
    if (c.m) {
      const T nb = c.hb ? add(mul(buf[i], c.momentum), mul(c.one_minus_dampening, d)) : d;
      d = c.n ? add(d, mul(c.momentum, nb)) : nb;
      buf[i] = nb;
    }
    p[i] = sub(pi, mul(c.lr, d));
  });
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    adam_step_kernel(const void* table, std::int64_t num_tensors, const AdamCoeffs<T> c) {
  for_chunk(table, num_tensors, [&](const TensorSlots& t, std::int64_t i) {
    T* p = static_cast<T*>(t.ptr[0]);
    const T* g = static_cast<const T*>(t.ptr[1]);
    T* m = static_cast<T*>(t.ptr[2]);
    T* v = static_cast<T*>(t.ptr[3]);
    T pi = p[i];
    if (c.decoupled) pi = mul(pi, c.decay);
    T gi = g[i];
    if (c.l2) gi = add(gi, mul(c.weight_decay, pi));
    const T mi = add(mul(m[i], c.beta1), mul(c.one_minus_beta1, gi));
    const T vi = add(mul(v[i], c.beta2), mul(mul(c.one_minus_beta2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const T denom = add(div(sqrt_rn(vi), c.bias2_sqrt), c.eps);
    p[i] = add(pi, div(mul(c.neg_step_size, mi), denom));
  });
}

// The stream key and upload stream of tables made while a graph is captured, one per device
// and never destroyed. No kernel ever runs on it, so the caching allocator hands its blocks only
// to other such tables: a table keyed by the capturing stream could take a block that kernels
// earlier in the same graph use for their temporaries, and every replay would overwrite it
// before the optimizer reads it.
const Stream& table_stream(int device) {
  static auto* streams = new StreamPerDevice();
  return streams->get(device);
}

void check_list(const MultiTensorList& list, const char* op) {
  MCD_CUDA_REQUIRE(
      list.num_chunks() <= std::numeric_limits<int>::max(),
      std::string(op) + ": " + std::to_string(list.num_chunks()) + " chunks exceed the grid");
}

}  // namespace

MultiTensorList::MultiTensorList(const std::vector<TensorSlots>& tensors, const Stream& stream)
    : device_(stream.device()), num_tensors_(static_cast<std::int64_t>(tensors.size())) {
  std::vector<Chunk> chunks;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    MCD_CUDA_REQUIRE(tensors[t].numel >= 0, "MultiTensorList: tensor " + std::to_string(t) +
                                                " has " + std::to_string(tensors[t].numel) +
                                                " elements");
    numel_ += tensors[t].numel;
    for (std::int64_t s = 0; s < tensors[t].numel; s += kChunk)
      chunks.push_back({static_cast<std::int64_t>(t), s});
  }
  num_chunks_ = static_cast<std::int64_t>(chunks.size());
  const std::size_t tensor_bytes = tensors.size() * sizeof(TensorSlots);
  const std::size_t bytes = tensor_bytes + chunks.size() * sizeof(Chunk);
  if (bytes == 0) return;
  std::vector<unsigned char> host(bytes);
  std::memcpy(host.data(), tensors.data(), tensor_bytes);
  if (!chunks.empty()) std::memcpy(host.data() + tensor_bytes, chunks.data(), bytes - tensor_bytes);
  if (stream.capturing()) {
    // A capture records work without running it, and a staged copy would wait for itself:
    // the table is uploaded now on a stream outside the capture, so every replay finds it. Its
    // memory comes from the graph's private pool (the graph keeps it), under a key of its own.
    const Stream& side = table_stream(device_);
    table_ = DeviceBuffer(device_, bytes, side.get());
    copy_host_to_device(table_.data(), host.data(), bytes, side);
  } else {
    table_ = DeviceBuffer(device_, bytes, stream.get());
    copy_host_to_device(table_.data(), host.data(), bytes, stream);
  }
}

template <class T>
void sgd_step_cuda(const MultiTensorList& list, const SgdStepArgs& o, cudaStream_t stream) {
  check_list(list, "sgd_step_cuda");
  MCD_CUDA_REQUIRE(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
                   "sgd_step_cuda: Nesterov momentum requires momentum > 0 and dampening == 0");
  if (list.num_chunks() == 0) return;
  const bool m = o.momentum != 0.0;
  const SgdCoeffs<T> c{static_cast<T>(o.lr),       static_cast<T>(o.weight_decay),
                       static_cast<T>(o.momentum), static_cast<T>(1.0 - o.dampening),
                       o.weight_decay != 0.0,      m,
                       m && o.has_buffer,          m && o.nesterov};
  sgd_step_kernel<T><<<static_cast<unsigned>(list.num_chunks()), kThreads, 0, stream>>>(
      list.device_table(), list.num_tensors(), c);
  MCD_CUDA_CHECK_LAUNCH("sgd_step_kernel");
}

template <class T>
void adam_step_cuda(const MultiTensorList& list, const AdamStepArgs& o, cudaStream_t stream) {
  check_list(list, "adam_step_cuda");
  MCD_CUDA_REQUIRE(o.step >= 1,
                   "adam_step_cuda: step " + std::to_string(o.step) + " (expected >= 1)");
  if (list.num_chunks() == 0) return;
  const double bias1 = 1.0 - std::pow(o.beta1, static_cast<double>(o.step));
  const double bias2 = 1.0 - std::pow(o.beta2, static_cast<double>(o.step));
  const bool decay = o.weight_decay != 0.0;
  const AdamCoeffs<T> c{static_cast<T>(o.beta1),
                        static_cast<T>(1.0 - o.beta1),
                        static_cast<T>(o.beta2),
                        static_cast<T>(1.0 - o.beta2),
                        static_cast<T>(o.weight_decay),
                        static_cast<T>(1.0 - o.lr * o.weight_decay),
                        static_cast<T>(-(o.lr / bias1)),
                        static_cast<T>(std::sqrt(bias2)),
                        static_cast<T>(o.eps),
                        decay && !o.decoupled,
                        decay && o.decoupled};
  adam_step_kernel<T><<<static_cast<unsigned>(list.num_chunks()), kThreads, 0, stream>>>(
      list.device_table(), list.num_tensors(), c);
  MCD_CUDA_CHECK_LAUNCH("adam_step_kernel");
}

template void sgd_step_cuda<float>(const MultiTensorList&, const SgdStepArgs&, cudaStream_t);
template void sgd_step_cuda<double>(const MultiTensorList&, const SgdStepArgs&, cudaStream_t);
template void adam_step_cuda<float>(const MultiTensorList&, const AdamStepArgs&, cudaStream_t);
template void adam_step_cuda<double>(const MultiTensorList&, const AdamStepArgs&, cudaStream_t);

}  // namespace mcd::kernels::cuda
