// The CUDA DistillDeviceOps table (engine/device_ops/nn.h): the fused multi-student loss and
// its JVP (distill_loss.h) and the teacher-mixture offset (distill_kl_offset.h). Each call
// takes a zero-filled workspace of its own from the caching allocator (the kernels leave its
// counter at zero, but a fresh one per call keeps calls on different streams independent).
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/caching_allocator.h>
#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/distill_kl_offset.h>
#include <mcd/kernels/cuda/distill_loss.h>
#include <mcd/kernels/cuda/distill_mixture.h>

#include "ops_nn_tables.h"

namespace mcd::kernels::cuda {
namespace {

template <class T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <class T>
std::vector<const T*> pointers(const std::vector<Tensor>& ts) {
  std::vector<const T*> out;
  for (const Tensor& t : ts)
    out.push_back(ptr<T>(t));
  return out;
}

struct Launch {
  Launch(const Tensor& t, std::int64_t k, std::int64_t b)
      : device(t.device().index),
        guard(device),
        stream(current_stream(device).get()),
        workspace(device, distill_loss_workspace_bytes(k, b), stream) {
    if (workspace.size() > 0)
      MCD_CUDA_CHECK(cudaMemsetAsync(workspace.data(), 0, workspace.size(), stream));
  }
  int device;
  DeviceGuard guard;
  cudaStream_t stream;
  DeviceBuffer workspace;
};

void check_students(const char* op, std::size_t k) {
  MCD_CHECK(k >= 1 && static_cast<std::int64_t>(k) <= kMaxDistillStudents,
            "{}: the CUDA kernel takes 1 to {} students, got {}", op, kMaxDistillStudents, k);
}

class CudaDistillOps final : public DistillDeviceOps {
 public:
  void distill_loss_forward(const std::vector<Tensor>& logits, const Tensor& prob,
                            const Tensor& log_prob, const Tensor& labels, const Tensor& alpha,
                            const Tensor& beta, double tau, Tensor& ce, Tensor& kl, Tensor& loss,
                            Tensor& grad_logits) override {
    const char* op = "fused_distill_loss";
    check_students(op, logits.size());
    const auto k = static_cast<std::int64_t>(logits.size());
    const std::int64_t b = logits[0].size(0), v = logits[0].size(1);
    Launch l(logits[0], k, b);
    floating(op, logits[0], [&](auto tag) {
      using T = decltype(tag);
      const std::vector<const T*> z = pointers<T>(logits);
      distill_loss_forward_cuda<T>(
          k, b, v, z.data(), ptr<T>(prob), ptr<T>(log_prob), labels.data<std::int64_t>(),
          alpha.data<T>(), beta.data<T>(), tau, ce.data<T>(), kl.data<T>(), loss.data<T>(),
          grad_logits.defined() ? grad_logits.data<T>() : nullptr, l.workspace.data(), l.stream);
    });
  }

  void distill_loss_jvp(const std::vector<Tensor>& logits, const std::vector<Tensor>& logits_t,
                        const Tensor& prob, const Tensor& labels, const Tensor& alpha,
                        const Tensor& beta, double tau, Tensor& ce_t, Tensor& kl_t,
                        Tensor& loss_t) override {
    const char* op = "fused_distill_loss_jvp";
    check_students(op, logits.size());
    MCD_CHECK(logits_t.size() == logits.size(), "{}: {} tangents for {} students", op,
              logits_t.size(), logits.size());
    const auto k = static_cast<std::int64_t>(logits.size());
    const std::int64_t b = logits[0].size(0), v = logits[0].size(1);
    Launch l(logits[0], k, b);
    floating(op, logits[0], [&](auto tag) {
      using T = decltype(tag);
      const std::vector<const T*> z = pointers<T>(logits), zt = pointers<T>(logits_t);
      distill_loss_jvp_cuda<T>(k, b, v, z.data(), zt.data(), ptr<T>(prob),
                               labels.data<std::int64_t>(), alpha.data<T>(), beta.data<T>(), tau,
                               ce_t.data<T>(), kl_t.data<T>(), loss_t.data<T>(), l.workspace.data(),
                               l.stream);
    });
  }

  void distill_add_kl_offset(const Tensor& offset, const Tensor& beta, double tau, Tensor& kl,
                             Tensor& loss) override {
    const int device = kl.device().index;
    DeviceGuard guard(device);
    const cudaStream_t s = current_stream(device).get();
    floating("fused_distill_loss", kl, [&](auto tag) {
      using T = decltype(tag);
      distill_add_kl_offset_cuda<T>(kl.size(0), kl.size(1), offset.data<T>(), beta.data<T>(), tau,
                                    kl.data<T>(), loss.data<T>(), s);
    });
  }

  void teacher_mixture(const std::vector<Tensor>& log_probs, Tensor& prob, Tensor& log_prob,
                       Tensor& offset) override {
    const int device = prob.device().index;
    DeviceGuard guard(device);
    const cudaStream_t s = current_stream(device).get();
    MCD_CHECK(static_cast<int>(log_probs.size()) <= kMaxMixtureGuides,
              "make_mixture_targets: {} teachers on CUDA (at most {})", log_probs.size(),
              kMaxMixtureGuides);
    floating("make_mixture_targets", prob, [&](auto tag) {
      using T = decltype(tag);
      std::vector<const T*> lp;
      for (const Tensor& t : log_probs)
        lp.push_back(t.data<T>());
      teacher_mixture_cuda<T>(static_cast<int>(lp.size()), lp.data(), prob.size(0), prob.size(1),
                              prob.data<T>(), log_prob.data<T>(), offset.data<T>(), s);
    });
  }
};

}  // namespace

void register_cuda_distill_ops() {
  static CudaDistillOps table;
  register_device_ops<DistillDeviceOps>(DeviceType::CUDA, &table);
}

}  // namespace mcd::kernels::cuda
