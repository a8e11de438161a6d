// Device kernels of the elementwise family: copies and fills, elementwise maps, reductions,
// softmax and the per-sample losses, with the helper kernels their autograd rules call. A
// backend registers one ElementwiseDeviceOps with register_device_ops (device_ops.h).
// Every method overwrites its outputs, which the engine allocates on the inputs' device with
// the shapes given below; (outer, V, inner) arrays and (B, V) logits are contiguous.
#pragma once
#include <cstdint>

#include <mcd/engine/tensor.h>
#include <mcd/kernels/cpu/elementwise.h>

namespace mcd {

// The op names of the CPU reference (kernels/cpu/elementwise.h), shared so that an op has
// one name on every backend.
using UnaryOp = kernels::cpu::UnaryOp;
using BinaryOp = kernels::cpu::BinaryOp;

// The rule kernels of softmax and log_softmax (contracts in kernels/cpu/softmax.h).
enum class SoftmaxRule { SoftmaxVjpJvp, LogSoftmaxVjp, LogSoftmaxJvp };

class ElementwiseDeviceOps {
 public:
  virtual ~ElementwiseDeviceOps() = default;

  // ---- strided maps: operands are views of out's shape (broadcast operands expanded with
  // stride 0); any strides, no overlap between out and an input except element for element.
  // out = src converted to out's dtype (float32, float64, int64 in any pair).
  virtual void copy(Tensor& out, const Tensor& src) = 0;
  virtual void fill(Tensor& out, double value) = 0;
  // out = op(x); `scalar` is the exponent (Pow), factor (Scale) or addend (AddScalar).
  virtual void unary(UnaryOp op, Tensor& out, const Tensor& x, double scalar) = 0;
  virtual void binary(BinaryOp op, Tensor& out, const Tensor& a, const Tensor& b) = 0;
  // out = v where x > 0, else 0: relu's derivative applied to v.
  virtual void relu_mask(Tensor& out, const Tensor& v, const Tensor& x) = 0;

  // ---- reductions over the middle axis of a contiguous (outer, reduced, inner) array
  // out (outer, inner) = sum over the middle axis, accumulated in double; 0 when reduced = 0.
  virtual void sum(Tensor& out, const Tensor& in, std::int64_t outer, std::int64_t reduced,
                   std::int64_t inner) = 0;
  // out (outer, inner) int64 = first index of the largest element (reduced > 0).
  virtual void argmax(Tensor& out, const Tensor& in, std::int64_t outer, std::int64_t reduced,
                      std::int64_t inner) = 0;

  // ---- softmax along the middle axis of a contiguous (outer, V, inner) array
  // y = softmax(x * inv_tau), or log_softmax when `log` is set.
  virtual void softmax_forward(Tensor& y, const Tensor& x, std::int64_t outer, std::int64_t v,
                               std::int64_t inner, double inv_tau, bool log) = 0;
  // out = rule(y, u) with y the saved forward output and u the cotangent or tangent.
  virtual void softmax_rule(SoftmaxRule rule, Tensor& out, const Tensor& y, const Tensor& u,
                            std::int64_t outer, std::int64_t v, std::int64_t inner,
                            double inv_tau) = 0;

  // ---- per-sample losses over (B, V) logits; lse tensors (B) are float64. A label outside
  // [0, V) cannot be reported from the device without a synchronisation: its row's outputs
  // are NaN instead.
  virtual void cross_entropy_forward(Tensor& loss, Tensor& lse, const Tensor& logits,
                                     const Tensor& labels) = 0;
  virtual void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& labels,
                                      const Tensor& lse, const Tensor& g) = 0;
  virtual void cross_entropy_jvp(Tensor& loss_t, const Tensor& logits, const Tensor& labels,
                                 const Tensor& lse, const Tensor& logits_t) = 0;
  virtual void kl_div_softmax_forward(Tensor& kl, Tensor& lse_s, Tensor& lse_t, const Tensor& s,
                                      const Tensor& t, double inv_tau) = 0;
  // ds or dt may be undefined when not wanted.
  virtual void kl_div_softmax_backward(Tensor& ds, Tensor& dt, const Tensor& s, const Tensor& t,
                                       const Tensor& lse_s, const Tensor& lse_t, const Tensor& g,
                                       double inv_tau) = 0;
  // s_t or t_t may be undefined (zero tangent).
  virtual void kl_div_softmax_jvp(Tensor& kl_t, const Tensor& s, const Tensor& t,
                                  const Tensor& lse_s, const Tensor& lse_t, const Tensor& s_t,
                                  const Tensor& t_t, double inv_tau) = 0;
};

}  // namespace mcd
