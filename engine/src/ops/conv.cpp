// conv2d: forward (im2col + GEMM or direct depthwise kernel), vjp (dx, dw, db; only for the
// inputs that require grad) and jvp. The rules run the same kernels on contiguous copies, so
// every path (strided inputs included) goes through one tested set of kernels. On a device
// the same kernels come from the device table (cuDNN on CUDA); the rules are shared.
#include <mcd/engine/ops/conv.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/engine/mac_counter.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/kernels/cpu/conv2d.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {

// Checks the shapes and options and returns the kernel geometry.
kc::Conv2dGeometry conv2d_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                   const Conv2dOptions& o) {
  check_defined("conv2d", x);
  check_defined("conv2d", weight);
  check_floating("conv2d", x);
  check_same_dtype("conv2d", x, weight);
  if (bias.defined()) check_same_dtype("conv2d", x, bias);
  check_same_device("conv2d", {&x, &weight, &bias});
  MCD_CHECK(x.dim() == 4, "conv2d: expected input (N, C, H, W), got shape {}",
            shape_str(x.shape()));
  MCD_CHECK(weight.dim() == 4,
            "conv2d: expected weight (C_out, C_in / groups, kH, kW), got shape {}",
            shape_str(weight.shape()));
  MCD_CHECK(o.stride_h >= 1 && o.stride_w >= 1, "conv2d: stride must be >= 1, got ({}, {})",
            o.stride_h, o.stride_w);
  MCD_CHECK(o.pad_h >= 0 && o.pad_w >= 0, "conv2d: padding must be >= 0, got ({}, {})", o.pad_h,
            o.pad_w);
  MCD_CHECK(o.groups >= 1, "conv2d: groups must be >= 1, got {}", o.groups);

  kc::Conv2dGeometry g;
  g.batch = x.size(0);
  g.in_channels = x.size(1);
  g.in_h = x.size(2);
  g.in_w = x.size(3);
  g.out_channels = weight.size(0);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = o.stride_h;
  g.stride_w = o.stride_w;
  g.pad_h = o.pad_h;
  g.pad_w = o.pad_w;
  g.groups = o.groups;

  MCD_CHECK(g.in_channels % g.groups == 0,
            "conv2d: groups = {} does not divide the {} input channels of input {}", g.groups,
            g.in_channels, shape_str(x.shape()));
  MCD_CHECK(g.out_channels % g.groups == 0,
            "conv2d: groups = {} does not divide the {} output channels of weight {}", g.groups,
            g.out_channels, shape_str(weight.shape()));
  MCD_CHECK(weight.size(1) == g.in_per_group(),
            "conv2d: weight {} expects {} input channels per group, but input {} with groups = "
            "{} has {}",
            shape_str(weight.shape()), weight.size(1), shape_str(x.shape()), g.groups,
            g.in_per_group());
  MCD_CHECK(g.kernel_h >= 1 && g.kernel_w >= 1, "conv2d: empty kernel in weight {}",
            shape_str(weight.shape()));
  MCD_CHECK(g.kernel_h <= g.in_h + 2 * g.pad_h && g.kernel_w <= g.in_w + 2 * g.pad_w,
            "conv2d: kernel {}x{} is larger than the padded input {}x{} (input {}, padding ({}, "
            "{}))",
            g.kernel_h, g.kernel_w, g.in_h + 2 * g.pad_h, g.in_w + 2 * g.pad_w,
            shape_str(x.shape()), g.pad_h, g.pad_w);
  if (bias.defined())
    MCD_CHECK(bias.dim() == 1 && bias.size(0) == g.out_channels,
              "conv2d: expected bias of shape [{}] for weight {}, got {}", g.out_channels,
              shape_str(weight.shape()), shape_str(bias.shape()));
  g.out_h = kc::conv_out_size(g.in_h, g.kernel_h, g.stride_h, g.pad_h);
  g.out_w = kc::conv_out_size(g.in_w, g.kernel_w, g.stride_w, g.pad_w);
  return g;
}

Shape output_shape(const kc::Conv2dGeometry& g) {
  return {g.batch, g.out_channels, g.out_h, g.out_w};
}

// y = conv(x, w) + b on values (no autograd); b may be undefined.
Tensor conv_values(const kc::Conv2dGeometry& g, const Tensor& x, const Tensor& w, const Tensor& b) {
  const Tensor xc = detail::contiguous_data(x), wc = detail::contiguous_data(w);
  const Tensor bc = b.defined() ? detail::contiguous_data(b) : Tensor();
  Tensor y = Tensor::empty(output_shape(g), x.dtype(), x.device());
  if (!x.device().is_cpu()) {
    require_device_ops<NnDeviceOps>("conv2d", x).conv2d_forward(g, xc, wc, bc, y);
    return y;
  }
  MCD_DISPATCH_FLOATING(x.dtype(), "conv2d", {
    kc::conv2d_forward_cpu<scalar_t>(g, xc.data<scalar_t>(), wc.data<scalar_t>(),
                                     bc.defined() ? bc.data<scalar_t>() : nullptr,
                                     y.data<scalar_t>());
  });
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  const kc::Conv2dGeometry g = conv2d_geometry(x, weight, bias, options);

  // ---- forward
  add_macs(g.batch * g.out_channels * g.out_h * g.out_w * g.in_per_group() * g.kernel_h *
           g.kernel_w);
  const Tensor xc = detail::contiguous_data(x), wc = detail::contiguous_data(weight);
  Tensor y = conv_values(g, xc, wc, bias);

  // ---- vjp: dx = conv_transpose(dy, w), dw = sum_n dy * im2col(x)^T, db = sum_{n,h,w} dy
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  record(y, "conv2d", {x, weight, bias},
         [g, xd = need_w ? xc.detach() : Tensor(), wd = need_x ? wc.detach() : Tensor(),
          bias_shape = bias.defined() ? bias.shape() : Shape{}, need_x, need_w,
          need_b](const Tensor& grad_y) {
           const Tensor dy = detail::contiguous_data(grad_y);
           const Device dev = dy.device();
           Tensor dx, dw, db;
           if (need_x)
             dx = Tensor::empty({g.batch, g.in_channels, g.in_h, g.in_w}, dy.dtype(), dev);
           if (need_w)
             dw = Tensor::empty({g.out_channels, g.in_per_group(), g.kernel_h, g.kernel_w},
                                dy.dtype(), dev);
           if (need_b) db = Tensor::empty(bias_shape, dy.dtype(), dev);
           if (!dev.is_cpu()) {
             NnDeviceOps& ops = require_device_ops<NnDeviceOps>("conv2d backward", dy);
             if (need_x) ops.conv2d_backward_input(g, dy, wd, dx);
             if (need_w) ops.conv2d_backward_weight(g, xd, dy, dw);
             if (need_b) ops.conv2d_backward_bias(g, dy, db);
             return std::vector<Tensor>{dx, dw, db};
           }
           MCD_DISPATCH_FLOATING(dy.dtype(), "conv2d", {
             const scalar_t* dyp = dy.data<scalar_t>();
             if (need_x)
               kc::conv2d_backward_input_cpu<scalar_t>(g, dyp, wd.data<scalar_t>(),
                                                       dx.data<scalar_t>());
             if (need_w)
               kc::conv2d_backward_weight_cpu<scalar_t>(g, xd.data<scalar_t>(), dyp,
                                                        dw.data<scalar_t>());
             if (need_b) kc::conv2d_backward_bias_cpu<scalar_t>(g, dyp, db.data<scalar_t>());
           });
           return std::vector<Tensor>{dx, dw, db};
         });

  // ---- jvp: conv is bilinear in (x, w) and affine in b:
  // y_t = conv(x_t, w) + conv(x, w_t) + b_t
  propagate_tangent(y, {x, weight, bias}, [&] {
    const bool has_x = x.impl().tangent != nullptr, has_w = weight.impl().tangent != nullptr;
    const Tensor b_t =
        bias.defined() && bias.impl().tangent ? Tensor(bias.impl().tangent) : Tensor();
    Tensor y_t;
    if (has_x) y_t = conv_values(g, x.tangent(), wc, b_t);
    if (has_w) {
      const Tensor term = conv_values(g, xc, weight.tangent(), y_t.defined() ? Tensor() : b_t);
      y_t = y_t.defined() ? add(y_t, term) : term;
    }
    if (!y_t.defined())  // only the bias carries a tangent
      y_t = b_t.reshape({1, g.out_channels, 1, 1}).expand(output_shape(g)).contiguous();
    return y_t;
  });
  return y;
}

}  // namespace mcd
