// The CUDA OptimDeviceOps table (engine/device_ops/nn.h): the multi-tensor SGD and Adam steps
// (multi_tensor_optim.h) over a list of every parameter's tensors (uploaded once per distinct
// list of pointers, see cached_list), and the SGD lookahead direction (sgd_direction.h).
#include <list>
#include <memory>
#include <mutex>

#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/multi_tensor_optim.h>
#include <mcd/kernels/cuda/sgd_direction.h>

#include "ops_nn_tables.h"

namespace mcd::kernels::cuda {
namespace {

SgdStepArgs sgd_args(const SgdDeviceStep& s) {
  SgdStepArgs a;
  a.lr = s.lr;
  a.momentum = s.momentum;
  a.dampening = s.dampening;
  a.weight_decay = s.weight_decay;
  a.nesterov = s.nesterov;
  a.has_buffer = s.has_buffer;
  return a;
}

void* raw(const Tensor& t) {
  return t.defined() ? const_cast<void*>(t.raw_data()) : nullptr;
}

// Checks one list entry: same device and dtype as the first parameter, contiguous, same size.
void check_entry(const char* op, const Tensor& first, const Tensor& p, const Tensor& t) {
  if (!t.defined()) return;
  MCD_CHECK(t.device() == first.device() && t.dtype() == first.dtype() && t.is_contiguous() &&
                t.numel() == p.numel(),
            "{}: a state or gradient tensor ({} {} on {}) does not match its parameter ({} {} on "
            "{}) or is not contiguous",
            op, dtype_name(t.dtype()), shape_str(t.shape()), t.device().str(),
            dtype_name(p.dtype()), shape_str(p.shape()), p.device().str());
}

bool same_slots(const std::vector<TensorSlots>& a, const std::vector<TensorSlots>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].numel != b[i].numel) return false;
    for (int k = 0; k < 4; ++k)
      if (a[i].ptr[k] != b[i].ptr[k]) return false;
  }
  return true;
}

// Uploading a list waits for the copy, which would stall the device once per step. In a
// training loop the caching allocator hands each step's gradients the blocks of the step
// before, so the same pointer lists come back: the last few uploaded lists are kept per
// stream and reused when their contents match exactly (a table holds nothing but those
// pointers and sizes, so equal contents mean an equal table). A graph being captured gets a
// table of its own, allocated in the graph's private pool and kept apart from that cache: a
// freed table's block could go to a later capture sharing the pool (graph.h) while the first
// graph still reads it. Captured tables are kept until kCaptured newer ones were made, far
// longer than their graphs live (each capture makes one per optimizer, and a trainer's
// recapture destroys the graph it replaces); they are a few kilobytes each.
const MultiTensorList& cached_list(const std::vector<TensorSlots>& slots, const Stream& stream) {
  struct Entry {
    cudaStream_t stream;
    std::vector<TensorSlots> slots;
    std::unique_ptr<MultiTensorList> list;
  };
  constexpr std::size_t kEntries = 32;  // several models' optimizers, each with its own list
  constexpr std::size_t kCaptured = 512;
  static std::mutex mutex;
  static auto* entries = new std::list<Entry>();  // never destroyed: see DeviceAllocator
  static auto* captured = new std::list<std::unique_ptr<MultiTensorList>>();
  std::lock_guard<std::mutex> lock(mutex);
  if (stream.capturing()) {
    captured->push_front(std::make_unique<MultiTensorList>(slots, stream));
    if (captured->size() > kCaptured) captured->pop_back();
    return *captured->front();
  }
  for (auto it = entries->begin(); it != entries->end(); ++it)
    if (it->stream == stream.get() && same_slots(it->slots, slots)) {
      entries->splice(entries->begin(), *entries, it);  // most recently used first
      return *entries->front().list;
    }
  entries->push_front({stream.get(), slots, std::make_unique<MultiTensorList>(slots, stream)});
  if (entries->size() > kEntries) entries->pop_back();
  return *entries->front().list;
}

// The list of (slot 0, slot 1, ...) tensors per parameter, on the first parameter's stream: one
// launch per parameter dtype (a model may mix float32 and float64 parameters, as the CPU
// optimizers allow), each over that dtype's parameters in their order.
template <class Launch>
void run_list(const char* op, const std::vector<std::vector<Tensor>>& slots, Launch&& launch) {
  if (slots.empty() || slots[0].empty()) return;
  const int device = slots[0][0].device().index;
  DeviceGuard guard(device);
  const Stream& stream = current_stream(device);
  for (const Tensor& p : slots[0])
    MCD_CHECK(p.dtype() == DType::Float32 || p.dtype() == DType::Float64,
              "{}: expected float32 or float64 parameters, got {}", op, dtype_name(p.dtype()));
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor* first = nullptr;
    std::vector<TensorSlots> list;
    for (std::size_t i = 0; i < slots[0].size(); ++i) {
      const Tensor& p = slots[0][i];
      if (p.dtype() != dtype) continue;
      if (first == nullptr) {
        first = &p;
        MCD_CHECK(p.device() == slots[0][0].device(), "{}: parameters on {} and on {}", op,
                  slots[0][0].device().str(), p.device().str());
      }
      TensorSlots s;
      s.numel = p.numel();
      for (std::size_t k = 0; k < slots.size(); ++k) {
        check_entry(op, *first, p, slots[k][i]);
        s.ptr[k] = raw(slots[k][i]);
      }
      list.push_back(s);
    }
    if (list.empty()) continue;
    const MultiTensorList& table = cached_list(list, stream);
    if (dtype == DType::Float32)
      launch(float{}, table, stream.get());
    else
      launch(double{}, table, stream.get());
  }
}

void check_sizes(const char* op, std::size_t n, std::initializer_list<std::size_t> others) {
  for (std::size_t m : others)
    MCD_CHECK(m == n, "{}: lists of {} parameters and {} state tensors", op, n, m);
}

class CudaOptimOps final : public OptimDeviceOps {
 public:
  void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& buffers, const SgdDeviceStep& step) override {
    check_sizes("Sgd::step", params.size(), {grads.size(), buffers.size()});
    const SgdStepArgs args = sgd_args(step);
    run_list("Sgd::step", {params, grads, buffers},
             [&](auto tag, const MultiTensorList& list, cudaStream_t s) {
               sgd_step_cuda<decltype(tag)>(list, args, s);
             });
  }

  void sgd_direction(const Tensor& param, const Tensor& grad, const Tensor& buffer,
                     const SgdDeviceStep& step, Tensor& out) override {
    const char* op = "Sgd::lookahead_direction";
    for (const Tensor* t : std::initializer_list<const Tensor*>{&grad, &buffer, &out})
      check_entry(op, param, param, *t);
    MCD_CHECK(param.is_contiguous(), "{}: parameter of shape {} is not contiguous", op,
              shape_str(param.shape()));
    const int device = param.device().index;
    DeviceGuard guard(device);
    const cudaStream_t s = current_stream(device).get();
    const SgdStepArgs args = sgd_args(step);
    if (param.dtype() == DType::Float32)
      sgd_direction_cuda<float>(param.numel(), param.data<float>(), grad.data<float>(),
                                buffer.defined() ? buffer.data<float>() : nullptr, args,
                                out.data<float>(), s);
    else if (param.dtype() == DType::Float64)
      sgd_direction_cuda<double>(param.numel(), param.data<double>(), grad.data<double>(),
                                 buffer.defined() ? buffer.data<double>() : nullptr, args,
                                 out.data<double>(), s);
    else
      fail("{}: expected a float32 or float64 parameter, got {}", op, dtype_name(param.dtype()));
  }

  void adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                 const AdamDeviceStep& step) override {
    const char* op = step.decoupled ? "AdamW::step" : "Adam::step";
    check_sizes(op, params.size(), {grads.size(), exp_avg.size(), exp_avg_sq.size()});
    AdamStepArgs args;
    args.lr = step.lr;
    args.beta1 = step.beta1;
    args.beta2 = step.beta2;
    args.eps = step.eps;
    args.weight_decay = step.weight_decay;
    args.decoupled = step.decoupled;
    args.step = step.step;
    run_list(op, {params, grads, exp_avg, exp_avg_sq},
             [&](auto tag, const MultiTensorList& list, cudaStream_t s) {
               adam_step_cuda<decltype(tag)>(list, args, s);
             });
  }
};

}  // namespace

void register_cuda_optim_ops() {
  static CudaOptimOps table;
  register_device_ops<OptimDeviceOps>(DeviceType::CUDA, &table);
}

}  // namespace mcd::kernels::cuda
