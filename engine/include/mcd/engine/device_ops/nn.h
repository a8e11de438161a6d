// Device op tables of the "nn" family (device_ops.h): matrix products, convolution, batch
// normalisation and pooling (NnDeviceOps), the optimizers' updates (OptimDeviceOps) and the
// fused distillation loss (DistillDeviceOps, so that distill/ needs no CUDA headers).
// Every method has the contract of its CPU twin in kernels/cpu/ (same formulas, same saved
// statistics); tensors are on the table's device, outputs are allocated by the caller and
// overwritten, and an undefined Tensor means "absent" wherever the CPU kernel takes a null.
// Unless a method says otherwise, its tensors are contiguous and share one floating dtype.
#pragma once
#include <cstdint>
#include <vector>

#include <mcd/engine/tensor.h>
#include <mcd/kernels/cpu/batch_norm.h>
#include <mcd/kernels/cpu/conv2d.h>
#include <mcd/kernels/cpu/pool.h>

namespace mcd {

class NnDeviceOps {
 public:
  virtual ~NnDeviceOps() = default;

  // ---- matmul. out (B, M, N) contiguous = a (B, M, K) @ b (B, K, N). a and b may be any
  // strided 3-D views (a batch stride of 0 broadcasts); the table reads row-major or
  // transposed matrices in place and copies only other layouts.
  virtual void matmul(const Tensor& a, const Tensor& b, Tensor& out) = 0;

  // ---- conv2d (kernels/cpu/conv2d.h): x, weight, bias, y as conv2d_forward_cpu.
  virtual void conv2d_forward(const kernels::cpu::Conv2dGeometry& g, const Tensor& x,
                              const Tensor& weight, const Tensor& bias, Tensor& y) = 0;
  virtual void conv2d_backward_input(const kernels::cpu::Conv2dGeometry& g, const Tensor& dy,
                                     const Tensor& weight, Tensor& dx) = 0;
  virtual void conv2d_backward_weight(const kernels::cpu::Conv2dGeometry& g, const Tensor& x,
                                      const Tensor& dy, Tensor& dweight) = 0;
  virtual void conv2d_backward_bias(const kernels::cpu::Conv2dGeometry& g, const Tensor& dy,
                                    Tensor& dbias) = 0;

  // ---- batch_norm (kernels/cpu/batch_norm.h). mean, var, invstd: float64 (C). relu and
  // residual (undefined for none): the fused tail relu(batch_norm + residual), the ReLU's mask
  // recomputed in the VJP and JVP from x, the statistics, weight, bias and the residual with
  // the forward's expressions.
  virtual void batch_norm_forward_train(const kernels::cpu::BatchNormDims& d, const Tensor& x,
                                        const Tensor& weight, const Tensor& bias, double eps,
                                        bool relu, const Tensor& residual, Tensor& y, Tensor& mean,
                                        Tensor& var, Tensor& invstd) = 0;
  // mean = running_mean, invstd = 1 / sqrt(running_var + eps), in double; the running
  // statistics (C) may be float32 or float64, any 1-D stride.
  virtual void batch_norm_eval_stats(const Tensor& running_mean, const Tensor& running_var,
                                     double eps, Tensor& mean, Tensor& invstd) = 0;
  virtual void batch_norm_forward_eval(const kernels::cpu::BatchNormDims& d, const Tensor& x,
                                       const Tensor& weight, const Tensor& bias, const Tensor& mean,
                                       const Tensor& invstd, bool relu, const Tensor& residual,
                                       Tensor& y) = 0;
  // In place: running = (1 - momentum) * running + momentum * batch statistic, with the
  // unbiased variance var * count / (count - 1); computed in double as on the CPU.
  virtual void batch_norm_update_running(Tensor& running_mean, Tensor& running_var,
                                         const Tensor& mean, const Tensor& var, std::int64_t count,
                                         double momentum) = 0;
  // bias and residual are read only with relu (for the mask); dresidual (the masked dy) is
  // written only with relu. dx, dweight, dbias, dresidual may each be undefined (not wanted).
  virtual void batch_norm_backward(const kernels::cpu::BatchNormDims& d, bool training, bool relu,
                                   const Tensor& dy, const Tensor& x, const Tensor& weight,
                                   const Tensor& bias, const Tensor& residual, const Tensor& mean,
                                   const Tensor& invstd, Tensor& dx, Tensor& dweight, Tensor& dbias,
                                   Tensor& dresidual) = 0;
  virtual void batch_norm_jvp(const kernels::cpu::BatchNormDims& d, bool training, bool relu,
                              const Tensor& x, const Tensor& x_t, const Tensor& weight,
                              const Tensor& bias, const Tensor& weight_t, const Tensor& bias_t,
                              const Tensor& residual, const Tensor& residual_t, const Tensor& mean,
                              const Tensor& invstd, Tensor& y_t) = 0;

  // ---- pooling (kernels/cpu/pool.h); argmax is int64, shaped like y.
  virtual void max_pool2d_forward(const kernels::cpu::Pool2dGeometry& g, const Tensor& x, Tensor& y,
                                  Tensor& argmax) = 0;
  virtual void max_pool2d_backward(const kernels::cpu::Pool2dGeometry& g, const Tensor& dy,
                                   const Tensor& argmax, Tensor& dx) = 0;
  virtual void max_pool2d_gather(const kernels::cpu::Pool2dGeometry& g, const Tensor& v,
                                 const Tensor& argmax, Tensor& y) = 0;
  virtual void avg_pool2d_forward(const kernels::cpu::Pool2dGeometry& g, const Tensor& x,
                                  Tensor& y) = 0;
  virtual void avg_pool2d_backward(const kernels::cpu::Pool2dGeometry& g, const Tensor& dy,
                                   Tensor& dx) = 0;
  virtual void adaptive_avg_pool2d_forward(const kernels::cpu::Pool2dGeometry& g, const Tensor& x,
                                           Tensor& y) = 0;
  virtual void adaptive_avg_pool2d_backward(const kernels::cpu::Pool2dGeometry& g, const Tensor& dy,
                                            Tensor& dx) = 0;
};

// Hyper-parameters of one SGD update (engine/include/mcd/engine/optim/sgd.h); has_buffer
// false is a parameter's first momentum step (the buffer is set to the direction).
struct SgdDeviceStep {
  double lr = 0.1, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool has_buffer = false;
};

// Hyper-parameters of one Adam / AdamW update; `step` is the count after incrementing.
struct AdamDeviceStep {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;
  std::int64_t step = 1;
};

// The optimizers' arithmetic on device, equal to the CPU loops bit for bit. Lists hold
// contiguous tensors of one dtype on one device, index by index of the same shape.
class OptimDeviceOps {
 public:
  virtual ~OptimDeviceOps() = default;
  // params -= lr * direction, buffers updated (unused without momentum: may be undefined).
  virtual void sgd_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<Tensor>& buffers, const SgdDeviceStep& step) = 0;
  // out = the direction sgd_step would take (Sgd::lookahead_direction); buffer may be
  // undefined when !step.has_buffer. Nothing else changes.
  virtual void sgd_direction(const Tensor& param, const Tensor& grad, const Tensor& buffer,
                             const SgdDeviceStep& step, Tensor& out) = 0;
  virtual void adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                         const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                         const AdamDeviceStep& step) = 0;
};

// The fused multi-student distillation loss on device (kernels/cpu/distill_loss.h). logits:
// K contiguous (B, V); prob and log_prob (B, V), both undefined without a teacher; labels
// int64 (B); alpha, beta (K, B).
class DistillDeviceOps {
 public:
  virtual ~DistillDeviceOps() = default;
  // ce, kl (K, B), loss (K); grad_logits (K, B, V) or undefined.
  virtual void distill_loss_forward(const std::vector<Tensor>& logits, const Tensor& prob,
                                    const Tensor& log_prob, const Tensor& labels,
                                    const Tensor& alpha, const Tensor& beta, double tau, Tensor& ce,
                                    Tensor& kl, Tensor& loss, Tensor& grad_logits) = 0;
  // logits_t: K entries, undefined ones are zero tangents. ce_t, kl_t (K, B), loss_t (K).
  virtual void distill_loss_jvp(const std::vector<Tensor>& logits,
                                const std::vector<Tensor>& logits_t, const Tensor& prob,
                                const Tensor& labels, const Tensor& alpha, const Tensor& beta,
                                double tau, Tensor& ce_t, Tensor& kl_t, Tensor& loss_t) = 0;
  // A teacher mixture's offset (B): kl[s, i] += offset[i] and
  // loss[s] += tau^2 / B * sum_i beta[s, i] * offset[i], summed in double in row order.
  virtual void distill_add_kl_offset(const Tensor& offset, const Tensor& beta, double tau,
                                     Tensor& kl, Tensor& loss) = 0;
  // The mixture of n guides from their contiguous (B, V) log-probabilities: prob and log_prob
  // (B, V) of the mean distribution, and the offset (B) = (1/n) sum_j KL(qT_j || mean)
  // (distill/fused_loss.h, make_mixture_targets).
  virtual void teacher_mixture(const std::vector<Tensor>& log_probs, Tensor& prob, Tensor& log_prob,
                               Tensor& offset) = 0;
};

}  // namespace mcd
