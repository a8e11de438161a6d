// Batch normalisation: forward (train / eval kernels), vjp (dx, dweight, dbias) and jvp (y_t),
// side by side. The statistics the rules need (mean, invstd per channel) are saved as float64
// (C) tensors whatever x's dtype; the running-statistic update is in place, never recorded.
// On a device, the kernels (and the update) come from the device table with the same
// contracts; the statistics then live on the device. With options.relu the kernels fuse the
// ReLU; its rules recompute the mask from x, the statistics, weight and bias (the bias is kept
// for that), so no pre-activation is saved. batch_norm_add also fuses a residual added before
// the ReLU; the mask then needs the residual too, which the rules keep.
#include <cmath>
#include <vector>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/ops/batch_norm.h>
#include <mcd/kernels/cpu/batch_norm.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;
using detail::data_or_null;

namespace {

Tensor contiguous_or_undefined(const Tensor& t) {
  return t.defined() ? detail::contiguous_data(t) : Tensor();
}

kc::BatchNormDims dims_of(const Tensor& x) {
  kc::BatchNormDims d{x.size(0), x.size(1), 1};
  for (std::int64_t i = 2; i < x.dim(); ++i)
    d.s *= x.size(i);
  return d;
}

void check_channel_tensor(const char* what, const Tensor& p, const Tensor& x, bool same_dtype) {
  if (!p.defined()) return;
  const std::int64_t c = x.size(1);
  MCD_CHECK(p.shape() == Shape{c},
            "batch_norm: {} must have shape [{}] (the channels of input {}), got {}", what, c,
            shape_str(x.shape()), shape_str(p.shape()));
  if (same_dtype)
    MCD_CHECK(p.dtype() == x.dtype(), "batch_norm: {} is {} but the input is {}", what,
              dtype_name(p.dtype()), dtype_name(x.dtype()));
  else
    check_floating("batch_norm", p);
}

// running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
void update_running_stats(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                          const std::vector<double>& var, std::int64_t count, double momentum) {
  std::vector<double> rm = running_mean.to_doubles(), rv = running_var.to_doubles();
  const double* m = mean.data<double>();
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  for (std::size_t c = 0; c < rm.size(); ++c) {
    rm[c] = (1.0 - momentum) * rm[c] + momentum * m[c];
    rv[c] = (1.0 - momentum) * rv[c] + momentum * var[c] * unbias;
  }
  const Shape shape = running_mean.shape();
  running_mean.copy_(Tensor::from_doubles(rm, shape, DType::Float64));
  running_var.copy_(Tensor::from_doubles(rv, shape, DType::Float64));
}

const char* node_name(bool relu, bool residual) {
  if (residual) return relu ? "batch_norm_add_relu" : "batch_norm_add";
  return relu ? "batch_norm_relu" : "batch_norm";
}

// y = batch_norm(x) (+ residual when defined) (then ReLU with options.relu).
Tensor batch_norm_tail(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       Tensor running_mean, Tensor running_var, const Tensor& residual,
                       const BatchNormOptions& options) {
  check_defined("batch_norm", x);
  check_floating("batch_norm", x);
  MCD_CHECK(x.dim() >= 2, "batch_norm: expected an input of shape (N, C, ...), got {}",
            shape_str(x.shape()));
  check_same_device("batch_norm", {&x, &weight, &bias, &running_mean, &running_var});
  check_channel_tensor("weight", weight, x, true);
  check_channel_tensor("bias", bias, x, true);
  MCD_CHECK(running_mean.defined() == running_var.defined(),
            "batch_norm: running_mean and running_var must be given together (input {})",
            shape_str(x.shape()));
  check_channel_tensor("running_mean", running_mean, x, false);
  check_channel_tensor("running_var", running_var, x, false);
  MCD_CHECK(std::isfinite(options.eps) && options.eps >= 0.0,
            "batch_norm: eps must be finite and non-negative, got {}", options.eps);
  MCD_CHECK(options.momentum >= 0.0 && options.momentum <= 1.0,
            "batch_norm: momentum must be in [0, 1], got {}", options.momentum);
  const bool has_residual = residual.defined();
  if (has_residual) {
    check_same_device("batch_norm_add", {&x, &residual});
    MCD_CHECK(residual.shape() == x.shape() && residual.dtype() == x.dtype(),
              "batch_norm_add: the residual must match the input {} ({}), got {} ({})",
              shape_str(x.shape()), dtype_name(x.dtype()), shape_str(residual.shape()),
              dtype_name(residual.dtype()));
  }

  const kc::BatchNormDims d = dims_of(x);
  const std::int64_t count = d.n * d.s;  // values per channel
  const bool training = options.training, relu = options.relu;
  if (training)
    MCD_CHECK(count > 1, "batch_norm: training needs more than one value per channel, got input {}",
              shape_str(x.shape()));
  else
    MCD_CHECK(running_mean.defined(),
              "batch_norm: eval mode needs running_mean and running_var (input {})",
              shape_str(x.shape()));

  // ---- forward
  const Tensor xc = detail::contiguous_data(x);
  const Tensor wc = contiguous_or_undefined(weight), bc = contiguous_or_undefined(bias);
  const Tensor rc = contiguous_or_undefined(residual);
  const Device dev = x.device();
  NnDeviceOps* ops = dev.is_cpu() ? nullptr : &require_device_ops<NnDeviceOps>("batch_norm", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor mean = Tensor::empty({d.c}, DType::Float64, dev);    // (C)
  Tensor invstd = Tensor::empty({d.c}, DType::Float64, dev);  // (C)
  if (ops != nullptr) {
    if (training) {
      Tensor var = Tensor::empty({d.c}, DType::Float64, dev);
      ops->batch_norm_forward_train(d, xc, wc, bc, options.eps, relu, rc, y, mean, var, invstd);
      if (running_mean.defined())
        ops->batch_norm_update_running(running_mean, running_var, mean, var, count,
                                       options.momentum);
    } else {
      ops->batch_norm_eval_stats(running_mean, running_var, options.eps, mean, invstd);
      ops->batch_norm_forward_eval(d, xc, wc, bc, mean, invstd, relu, rc, y);
    }
  } else if (training) {
    std::vector<double> var(static_cast<std::size_t>(d.c));
    MCD_DISPATCH_FLOATING(x.dtype(), "batch_norm", {
      kc::batch_norm_forward_train_cpu<scalar_t>(
          d, xc.data<scalar_t>(), data_or_null<scalar_t>(wc), data_or_null<scalar_t>(bc),
          options.eps, {relu, data_or_null<scalar_t>(rc)}, y.data<scalar_t>(), mean.data<double>(),
          var.data(), invstd.data<double>());
    });
    if (running_mean.defined())
      update_running_stats(running_mean, running_var, mean, var, count, options.momentum);
  } else {
    const std::vector<double> rm = running_mean.to_doubles(), rv = running_var.to_doubles();
    for (std::int64_t c = 0; c < d.c; ++c) {
      mean.data<double>()[c] = rm[static_cast<std::size_t>(c)];
      invstd.data<double>()[c] = 1.0 / std::sqrt(rv[static_cast<std::size_t>(c)] + options.eps);
    }
    MCD_DISPATCH_FLOATING(x.dtype(), "batch_norm", {
      kc::batch_norm_forward_eval_cpu<scalar_t>(
          d, xc.data<scalar_t>(), data_or_null<scalar_t>(wc), data_or_null<scalar_t>(bc),
          mean.data<double>(), invstd.data<double>(), {relu, data_or_null<scalar_t>(rc)},
          y.data<scalar_t>());
    });
  }

  // ---- vjp: dx, dweight, dbias (and dresidual); with relu, those of dy masked by the
  // recomputed ReLU mask. Without the ReLU the residual's gradient is dy itself.
  const bool need_x = x.requires_grad();
  const bool need_w = weight.defined() && weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  const bool need_r = has_residual && residual.requires_grad();
  // The mask needs the bias and the residual; the plain rules need neither.
  const Tensor gate_bias = relu ? bc : Tensor();
  const Tensor gate_residual = relu ? rc : Tensor();
  std::vector<Tensor> inputs = {x, weight, bias};
  if (has_residual) inputs.push_back(residual);
  record(y, node_name(relu, has_residual), inputs,
         [xc, wc, gate_bias, gate_residual, mean, invstd, d, training, relu, has_residual, need_x,
          need_w, need_b, need_r, shape = x.shape()](const Tensor& g) {
           const Tensor gc = detail::contiguous_data(g);
           const Device gdev = gc.device();
           const bool masked_r = need_r && relu;
           Tensor dx = need_x ? Tensor::empty(shape, gc.dtype(), gdev) : Tensor();
           Tensor dw = need_w ? Tensor::empty({d.c}, gc.dtype(), gdev) : Tensor();
           Tensor db = need_b ? Tensor::empty({d.c}, gc.dtype(), gdev) : Tensor();
           Tensor dr = masked_r ? Tensor::empty(shape, gc.dtype(), gdev) : Tensor();
           if (!gdev.is_cpu()) {
             require_device_ops<NnDeviceOps>("batch_norm backward", gc)
                 .batch_norm_backward(d, training, relu, gc, xc, wc, gate_bias, gate_residual, mean,
                                      invstd, dx, dw, db, dr);
           } else {
             MCD_DISPATCH_FLOATING(gc.dtype(), "batch_norm backward", {
               kc::batch_norm_backward_cpu<scalar_t>(
                   d, training, {relu, data_or_null<scalar_t>(gate_residual)}, gc.data<scalar_t>(),
                   xc.data<scalar_t>(), data_or_null<scalar_t>(wc),
                   data_or_null<scalar_t>(gate_bias), mean.data<double>(), invstd.data<double>(),
                   data_or_null<scalar_t>(dx), data_or_null<scalar_t>(dw),
                   data_or_null<scalar_t>(db), data_or_null<scalar_t>(dr));
             });
           }
           std::vector<Tensor> grads = {dx, dw, db};
           if (has_residual) grads.push_back(!need_r ? Tensor() : relu ? dr : g);
           return grads;
         });

  // ---- jvp: y_t from x_t, weight_t, bias_t (exact through the batch statistics) and
  // residual_t; with relu, masked by the recomputed ReLU mask
  propagate_tangent(y, inputs, [&] {
    const Tensor xt = has_tangent(x) ? detail::contiguous_data(x.tangent()) : Tensor();
    const Tensor wt = has_tangent(weight) ? detail::contiguous_data(weight.tangent()) : Tensor();
    const Tensor bt = has_tangent(bias) ? detail::contiguous_data(bias.tangent()) : Tensor();
    const Tensor rt = has_residual && has_tangent(residual)
                          ? detail::contiguous_data(residual.tangent())
                          : Tensor();
    Tensor yt = Tensor::empty(x.shape(), x.dtype(), dev);
    if (ops != nullptr) {
      ops->batch_norm_jvp(d, training, relu, xc, xt, wc, bc, wt, bt, rc, rt, mean, invstd, yt);
      return yt;
    }
    MCD_DISPATCH_FLOATING(x.dtype(), "batch_norm jvp", {
      kc::batch_norm_jvp_cpu<scalar_t>(
          d, training, {relu, data_or_null<scalar_t>(rc)}, xc.data<scalar_t>(),
          data_or_null<scalar_t>(xt), data_or_null<scalar_t>(wc), data_or_null<scalar_t>(bc),
          data_or_null<scalar_t>(wt), data_or_null<scalar_t>(bt), data_or_null<scalar_t>(rt),
          mean.data<double>(), invstd.data<double>(), yt.data<scalar_t>());
    });
    return yt;
  });
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, const BatchNormOptions& options) {
  return batch_norm_tail(x, weight, bias, std::move(running_mean), std::move(running_var), Tensor(),
                         options);
}

Tensor batch_norm_add(const Tensor& x, const Tensor& weight, const Tensor& bias,
                      Tensor running_mean, Tensor running_var, const Tensor& residual,
                      const BatchNormOptions& options) {
  check_defined("batch_norm_add", residual);
  return batch_norm_tail(x, weight, bias, std::move(running_mean), std::move(running_var), residual,
                         options);
}

}  // namespace mcd
