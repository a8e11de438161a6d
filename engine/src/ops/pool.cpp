// Pooling ops: forward, vjp (dx) and jvp (y_t) side by side. Average pools are linear, so
// their tangent is the forward kernel applied to x_t; max pooling saves the argmax of every
// window and routes both the cotangent and the tangent through that element. On a device the
// kernels come from the device table (same contracts); the rules are shared.
#include <mcd/engine/ops/pool.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/kernels/cpu/pool.h>

#include "../dispatch.h"

namespace mcd {
namespace kc = kernels::cpu;

namespace {

void check_pool_input(const char* op, const Tensor& x) {
  check_defined(op, x);
  check_floating(op, x);
  MCD_CHECK(x.dim() == 4, "{}: expected input (N, C, H, W), got shape {}", op,
            shape_str(x.shape()));
}

kc::Pool2dGeometry base_geometry(const Tensor& x) {
  kc::Pool2dGeometry g;
  g.batch = x.size(0);
  g.channels = x.size(1);
  g.in_h = x.size(2);
  g.in_w = x.size(3);
  return g;
}

kc::Pool2dGeometry pool_geometry(const char* op, const Tensor& x, const Pool2dOptions& o) {
  check_pool_input(op, x);
  MCD_CHECK(o.kernel_h >= 1 && o.kernel_w >= 1, "{}: kernel must be >= 1, got ({}, {})", op,
            o.kernel_h, o.kernel_w);
  MCD_CHECK(o.stride_h >= 1 && o.stride_w >= 1, "{}: stride must be >= 1, got ({}, {})", op,
            o.stride_h, o.stride_w);
  // Every window must contain a real input element (PyTorch's rule).
  MCD_CHECK(o.pad_h >= 0 && o.pad_w >= 0 && 2 * o.pad_h <= o.kernel_h && 2 * o.pad_w <= o.kernel_w,
            "{}: padding ({}, {}) must be >= 0 and at most half the kernel ({}, {})", op, o.pad_h,
            o.pad_w, o.kernel_h, o.kernel_w);
  kc::Pool2dGeometry g = base_geometry(x);
  // An empty plane would leave every window without a real element (PyTorch refuses it too).
  MCD_CHECK(g.in_h >= 1 && g.in_w >= 1, "{}: input planes must not be empty, got input {}", op,
            shape_str(x.shape()));
  MCD_CHECK(o.kernel_h <= g.in_h + 2 * o.pad_h && o.kernel_w <= g.in_w + 2 * o.pad_w,
            "{}: kernel {}x{} is larger than the padded input {}x{} (input {})", op, o.kernel_h,
            o.kernel_w, g.in_h + 2 * o.pad_h, g.in_w + 2 * o.pad_w, shape_str(x.shape()));
  g.kernel_h = o.kernel_h;
  g.kernel_w = o.kernel_w;
  g.stride_h = o.stride_h;
  g.stride_w = o.stride_w;
  g.pad_h = o.pad_h;
  g.pad_w = o.pad_w;
  g.out_h = (g.in_h + 2 * g.pad_h - g.kernel_h) / g.stride_h + 1;
  g.out_w = (g.in_w + 2 * g.pad_w - g.kernel_w) / g.stride_w + 1;
  return g;
}

Shape input_shape(const kc::Pool2dGeometry& g) {
  return {g.batch, g.channels, g.in_h, g.in_w};
}
Shape output_shape(const kc::Pool2dGeometry& g) {
  return {g.batch, g.channels, g.out_h, g.out_w};
}

// The average pools: forward, vjp and jvp differ only in their two kernels.
template <class T>
using TypedKernel = void (*)(const kc::Pool2dGeometry&, const T*, T*);
using DeviceKernel = void (NnDeviceOps::*)(const kc::Pool2dGeometry&, const Tensor&, Tensor&);

struct LinearPoolKernels {
  TypedKernel<float> forward_f, backward_f;
  TypedKernel<double> forward_d, backward_d;
  DeviceKernel forward_device, backward_device;
};

Tensor run_linear(const char* op, const kc::Pool2dGeometry& g, TypedKernel<float> kf,
                  TypedKernel<double> kd, DeviceKernel kdev, const Tensor& in,
                  const Shape& out_shape) {
  const Tensor ic = detail::contiguous_data(in);
  Tensor out = Tensor::empty(out_shape, in.dtype(), in.device());
  if (!in.device().is_cpu()) {
    check_floating(op, in);
    (require_device_ops<NnDeviceOps>(op, in).*kdev)(g, ic, out);
  } else if (in.dtype() == DType::Float32)
    kf(g, ic.data<float>(), out.data<float>());
  else if (in.dtype() == DType::Float64)
    kd(g, ic.data<double>(), out.data<double>());
  else
    fail("{}: expected a float32 or float64 tensor, got {}", op, dtype_name(in.dtype()));
  return out;
}

Tensor linear_pool(const char* op, const Tensor& x, const kc::Pool2dGeometry& g,
                   const LinearPoolKernels& k) {
  // ---- forward
  Tensor y = run_linear(op, g, k.forward_f, k.forward_d, k.forward_device, x, output_shape(g));
  // ---- vjp: the adjoint spreads each output cotangent evenly over its window
  record(y, op, {x}, [op, g, k](const Tensor& grad_y) {
    return std::vector<Tensor>{
        run_linear(op, g, k.backward_f, k.backward_d, k.backward_device, grad_y, input_shape(g))};
  });
  // ---- jvp: linear, y_t = pool(x_t)
  propagate_tangent(y, {x}, [&] {
    return run_linear(op, g, k.forward_f, k.forward_d, k.forward_device, x.tangent(),
                      output_shape(g));
  });
  return y;
}

}  // namespace

// ---- max pooling

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const kc::Pool2dGeometry g = pool_geometry("max_pool2d", x, options);
  // ---- forward (saves the argmax of every window, an index inside its plane)
  const Tensor xc = detail::contiguous_data(x);
  Tensor y = Tensor::empty(output_shape(g), x.dtype(), x.device());
  Tensor argmax = Tensor::empty(output_shape(g), DType::Int64, x.device());
  if (!x.device().is_cpu()) {
    require_device_ops<NnDeviceOps>("max_pool2d", x).max_pool2d_forward(g, xc, y, argmax);
  } else {
    MCD_DISPATCH_FLOATING(x.dtype(), "max_pool2d", {
      kc::max_pool2d_forward_cpu<scalar_t>(g, xc.data<scalar_t>(), y.data<scalar_t>(),
                                           argmax.data<std::int64_t>());
    });
  }

  // ---- vjp: dx = dy scattered to the argmax elements
  record(y, "max_pool2d", {x}, [g, argmax](const Tensor& grad_y) {
    const Tensor dy = detail::contiguous_data(grad_y);
    Tensor dx = Tensor::empty(input_shape(g), dy.dtype(), dy.device());
    if (!dy.device().is_cpu()) {
      require_device_ops<NnDeviceOps>("max_pool2d backward", dy)
          .max_pool2d_backward(g, dy, argmax, dx);
      return std::vector<Tensor>{dx};
    }
    MCD_DISPATCH_FLOATING(dy.dtype(), "max_pool2d", {
      kc::max_pool2d_backward_cpu<scalar_t>(g, dy.data<scalar_t>(), argmax.data<std::int64_t>(),
                                            dx.data<scalar_t>());
    });
    return std::vector<Tensor>{dx};
  });

  // ---- jvp: y_t = x_t at the argmax elements
  propagate_tangent(y, {x}, [&] {
    const Tensor x_t = detail::contiguous_data(x.tangent());
    Tensor y_t = Tensor::empty(output_shape(g), x_t.dtype(), x_t.device());
    if (!x_t.device().is_cpu()) {
      require_device_ops<NnDeviceOps>("max_pool2d jvp", x_t).max_pool2d_gather(g, x_t, argmax, y_t);
      return y_t;
    }
    MCD_DISPATCH_FLOATING(x_t.dtype(), "max_pool2d", {
      kc::max_pool2d_gather_cpu<scalar_t>(g, x_t.data<scalar_t>(), argmax.data<std::int64_t>(),
                                          y_t.data<scalar_t>());
    });
    return y_t;
  });
  return y;
}

// ---- average pooling

Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& options) {
  const kc::Pool2dGeometry g = pool_geometry("avg_pool2d", x, options);
  return linear_pool("avg_pool2d", x, g,
                     {kc::avg_pool2d_forward_cpu<float>, kc::avg_pool2d_backward_cpu<float>,
                      kc::avg_pool2d_forward_cpu<double>, kc::avg_pool2d_backward_cpu<double>,
                      &NnDeviceOps::avg_pool2d_forward, &NnDeviceOps::avg_pool2d_backward});
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::int64_t out_h, std::int64_t out_w) {
  check_pool_input("adaptive_avg_pool2d", x);
  MCD_CHECK(out_h >= 1 && out_w >= 1,
            "adaptive_avg_pool2d: output size must be >= 1, got ({}, {}) for input {}", out_h,
            out_w, shape_str(x.shape()));
  MCD_CHECK(x.size(2) >= 1 && x.size(3) >= 1,
            "adaptive_avg_pool2d: empty spatial extent in input {}", shape_str(x.shape()));
  kc::Pool2dGeometry g = base_geometry(x);
  g.out_h = out_h;
  g.out_w = out_w;
  return linear_pool(
      "adaptive_avg_pool2d", x, g,
      {kc::adaptive_avg_pool2d_forward_cpu<float>, kc::adaptive_avg_pool2d_backward_cpu<float>,
       kc::adaptive_avg_pool2d_forward_cpu<double>, kc::adaptive_avg_pool2d_backward_cpu<double>,
       &NnDeviceOps::adaptive_avg_pool2d_forward, &NnDeviceOps::adaptive_avg_pool2d_backward});
}

}  // namespace mcd
