// The CUDA NnDeviceOps table (engine/device_ops/nn.h): adapters from the engine's Tensors to
// the launchers (gemm.h, conv2d.h, batch_norm.h, pool.h), each run with the tensors' device
// current on that device's current stream; and register_cuda_nn_ops(), which installs this
// table and the optimizer and distillation tables.
#include <mcd/engine/device_ops.h>
#include <mcd/engine/device_ops/nn.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/batch_norm.h>
#include <mcd/kernels/cuda/conv2d.h>
#include <mcd/kernels/cuda/gemm.h>
#include <mcd/kernels/cuda/pool.h>

#include "ops_nn_tables.h"

namespace mcd::kernels::cuda {
namespace {

using cpu::BatchNormDims;
using cpu::Conv2dGeometry;
using cpu::Pool2dGeometry;

// The device of `t` made current for the scope, and its current stream.
struct OnDevice {
  explicit OnDevice(const Tensor& t)
      : device(t.device().index), guard(device), stream(current_stream(device).get()) {}
  int device;
  DeviceGuard guard;
  cudaStream_t stream;
};

template <class T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* mut(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// One (B, R, C) operand as cuBLAS can read it, holding a copy when the layout needs one.
template <class T>
struct MatmulOperand {
  Tensor storage;  // keeps a contiguous copy alive
  GemmOperand<T> view;
};

template <class T>
MatmulOperand<T> matmul_operand(const Tensor& t) {
  const auto& st = t.strides();
  const std::int64_t rows = t.size(1), cols = t.size(2);
  MatmulOperand<T> o;
  if (st[2] == 1 && st[1] >= std::max<std::int64_t>(cols, 1)) {
    o.view = {t.data<T>(), false, st[1], st[0]};
  } else if (st[1] == 1 && st[2] >= std::max<std::int64_t>(rows, 1)) {
    o.view = {t.data<T>(), true, st[2], st[0]};
  } else {
    o.storage = t.detach().contiguous();
    o.view = {o.storage.template data<T>(), false, std::max<std::int64_t>(cols, 1), rows * cols};
  }
  if (t.size(0) == 1) o.view.batch_stride = 0;
  return o;
}

// The element stride of a (C) statistics tensor.
std::int64_t stride0(const Tensor& t) {
  return t.dim() == 1 ? t.strides()[0] : 1;
}

class CudaNnOps final : public NnDeviceOps {
 public:
  void matmul(const Tensor& a, const Tensor& b, Tensor& out) override {
    OnDevice on(out);
    floating("matmul", a, [&](auto tag) {
      using T = decltype(tag);
      const MatmulOperand<T> oa = matmul_operand<T>(a), ob = matmul_operand<T>(b);
      gemm_batched_cuda<T>(a.size(0), a.size(1), b.size(2), a.size(2), oa.view, ob.view,
                           out.data<T>(), on.device, on.stream);
    });
  }

  // ---- conv2d
  void conv2d_forward(const Conv2dGeometry& g, const Tensor& x, const Tensor& weight,
                      const Tensor& bias, Tensor& y) override {
    OnDevice on(y);
    floating("conv2d", x, [&](auto tag) {
      using T = decltype(tag);
      conv2d_forward_cuda<T>(g, x.data<T>(), weight.data<T>(), ptr<T>(bias), y.data<T>(), on.device,
                             on.stream);
    });
  }
  void conv2d_backward_input(const Conv2dGeometry& g, const Tensor& dy, const Tensor& weight,
                             Tensor& dx) override {
    OnDevice on(dx);
    floating("conv2d backward", dy, [&](auto tag) {
      using T = decltype(tag);
      conv2d_backward_input_cuda<T>(g, dy.data<T>(), weight.data<T>(), dx.data<T>(), on.device,
                                    on.stream);
    });
  }
  void conv2d_backward_weight(const Conv2dGeometry& g, const Tensor& x, const Tensor& dy,
                              Tensor& dweight) override {
    OnDevice on(dweight);
    floating("conv2d backward", dy, [&](auto tag) {
      using T = decltype(tag);
      conv2d_backward_weight_cuda<T>(g, x.data<T>(), dy.data<T>(), dweight.data<T>(), on.device,
                                     on.stream);
    });
  }
  void conv2d_backward_bias(const Conv2dGeometry& g, const Tensor& dy, Tensor& dbias) override {
    OnDevice on(dbias);
    floating("conv2d backward", dy, [&](auto tag) {
      using T = decltype(tag);
      conv2d_backward_bias_cuda<T>(g, dy.data<T>(), dbias.data<T>(), on.device, on.stream);
    });
  }

  // ---- batch_norm
  void batch_norm_forward_train(const BatchNormDims& d, const Tensor& x, const Tensor& weight,
                                const Tensor& bias, double eps, bool relu, const Tensor& residual,
                                Tensor& y, Tensor& mean, Tensor& var, Tensor& invstd) override {
    OnDevice on(y);
    floating("batch_norm", x, [&](auto tag) {
      using T = decltype(tag);
      batch_norm_forward_train_cuda<T>(d, x.data<T>(), ptr<T>(weight), ptr<T>(bias), eps,
                                       {relu, ptr<T>(residual)}, y.data<T>(), mean.data<double>(),
                                       var.data<double>(), invstd.data<double>(), on.stream);
    });
  }
  void batch_norm_eval_stats(const Tensor& running_mean, const Tensor& running_var, double eps,
                             Tensor& mean, Tensor& invstd) override {
    OnDevice on(mean);
    MCD_CHECK(running_mean.dtype() == running_var.dtype(),
              "batch_norm: running_mean is {} but running_var is {}",
              dtype_name(running_mean.dtype()), dtype_name(running_var.dtype()));
    floating("batch_norm running statistics", running_mean, [&](auto tag) {
      using R = decltype(tag);
      batch_norm_eval_stats_cuda<R>(mean.numel(), running_mean.data<R>(), stride0(running_mean),
                                    running_var.data<R>(), stride0(running_var), eps,
                                    mean.data<double>(), invstd.data<double>(), on.stream);
    });
  }
  void batch_norm_forward_eval(const BatchNormDims& d, const Tensor& x, const Tensor& weight,
                               const Tensor& bias, const Tensor& mean, const Tensor& invstd,
                               bool relu, const Tensor& residual, Tensor& y) override {
    OnDevice on(y);
    floating("batch_norm", x, [&](auto tag) {
      using T = decltype(tag);
      batch_norm_forward_eval_cuda<T>(d, x.data<T>(), ptr<T>(weight), ptr<T>(bias),
                                      mean.data<double>(), invstd.data<double>(),
                                      {relu, ptr<T>(residual)}, y.data<T>(), on.stream);
    });
  }
  void batch_norm_update_running(Tensor& running_mean, Tensor& running_var, const Tensor& mean,
                                 const Tensor& var, std::int64_t count, double momentum) override {
    OnDevice on(running_mean);
    MCD_CHECK(running_mean.dtype() == running_var.dtype(),
              "batch_norm: running_mean is {} but running_var is {}",
              dtype_name(running_mean.dtype()), dtype_name(running_var.dtype()));
    floating("batch_norm running statistics", running_mean, [&](auto tag) {
      using R = decltype(tag);
      batch_norm_update_running_cuda<R>(mean.numel(), running_mean.data<R>(), stride0(running_mean),
                                        running_var.data<R>(), stride0(running_var),
                                        mean.data<double>(), var.data<double>(), count, momentum,
                                        on.stream);
    });
  }
  void batch_norm_backward(const BatchNormDims& d, bool training, bool relu, const Tensor& dy,
                           const Tensor& x, const Tensor& weight, const Tensor& bias,
                           const Tensor& residual, const Tensor& mean, const Tensor& invstd,
                           Tensor& dx, Tensor& dweight, Tensor& dbias, Tensor& dresidual) override {
    OnDevice on(dy);
    floating("batch_norm backward", dy, [&](auto tag) {
      using T = decltype(tag);
      batch_norm_backward_cuda<T>(d, training, {relu, ptr<T>(residual)}, dy.data<T>(), x.data<T>(),
                                  ptr<T>(weight), ptr<T>(bias), mean.data<double>(),
                                  invstd.data<double>(), mut<T>(dx), mut<T>(dweight), mut<T>(dbias),
                                  mut<T>(dresidual), on.stream);
    });
  }
  void batch_norm_jvp(const BatchNormDims& d, bool training, bool relu, const Tensor& x,
                      const Tensor& x_t, const Tensor& weight, const Tensor& bias,
                      const Tensor& weight_t, const Tensor& bias_t, const Tensor& residual,
                      const Tensor& residual_t, const Tensor& mean, const Tensor& invstd,
                      Tensor& y_t) override {
    OnDevice on(y_t);
    floating("batch_norm jvp", x, [&](auto tag) {
      using T = decltype(tag);
      batch_norm_jvp_cuda<T>(d, training, {relu, ptr<T>(residual)}, x.data<T>(), ptr<T>(x_t),
                             ptr<T>(weight), ptr<T>(bias), ptr<T>(weight_t), ptr<T>(bias_t),
                             ptr<T>(residual_t), mean.data<double>(), invstd.data<double>(),
                             y_t.data<T>(), on.stream);
    });
  }

  // ---- pooling
  void max_pool2d_forward(const Pool2dGeometry& g, const Tensor& x, Tensor& y,
                          Tensor& argmax) override {
    OnDevice on(y);
    floating("max_pool2d", x, [&](auto tag) {
      using T = decltype(tag);
      max_pool2d_forward_cuda<T>(g, x.data<T>(), y.data<T>(), argmax.data<std::int64_t>(),
                                 on.stream);
    });
  }
  void max_pool2d_backward(const Pool2dGeometry& g, const Tensor& dy, const Tensor& argmax,
                           Tensor& dx) override {
    OnDevice on(dx);
    floating("max_pool2d", dy, [&](auto tag) {
      using T = decltype(tag);
      max_pool2d_backward_cuda<T>(g, dy.data<T>(), argmax.data<std::int64_t>(), dx.data<T>(),
                                  on.stream);
    });
  }
  void max_pool2d_gather(const Pool2dGeometry& g, const Tensor& v, const Tensor& argmax,
                         Tensor& y) override {
    OnDevice on(y);
    floating("max_pool2d", v, [&](auto tag) {
      using T = decltype(tag);
      max_pool2d_gather_cuda<T>(g, v.data<T>(), argmax.data<std::int64_t>(), y.data<T>(),
                                on.stream);
    });
  }
  void avg_pool2d_forward(const Pool2dGeometry& g, const Tensor& x, Tensor& y) override {
    OnDevice on(y);
    floating("avg_pool2d", x, [&](auto tag) {
      using T = decltype(tag);
      avg_pool2d_forward_cuda<T>(g, x.data<T>(), y.data<T>(), on.stream);
    });
  }
  void avg_pool2d_backward(const Pool2dGeometry& g, const Tensor& dy, Tensor& dx) override {
    OnDevice on(dx);
    floating("avg_pool2d", dy, [&](auto tag) {
      using T = decltype(tag);
      avg_pool2d_backward_cuda<T>(g, dy.data<T>(), dx.data<T>(), on.stream);
    });
  }
  void adaptive_avg_pool2d_forward(const Pool2dGeometry& g, const Tensor& x, Tensor& y) override {
    OnDevice on(y);
    floating("adaptive_avg_pool2d", x, [&](auto tag) {
      using T = decltype(tag);
      adaptive_avg_pool2d_forward_cuda<T>(g, x.data<T>(), y.data<T>(), on.stream);
    });
  }
  void adaptive_avg_pool2d_backward(const Pool2dGeometry& g, const Tensor& dy,
                                    Tensor& dx) override {
    OnDevice on(dx);
    floating("adaptive_avg_pool2d", dy, [&](auto tag) {
      using T = decltype(tag);
      adaptive_avg_pool2d_backward_cuda<T>(g, dy.data<T>(), dx.data<T>(), on.stream);
    });
  }
};

}  // namespace

void register_cuda_nn_ops() {
  static CudaNnOps table;  // lives as long as the program
  register_device_ops<NnDeviceOps>(DeviceType::CUDA, &table);
  register_cuda_optim_ops();
  register_cuda_distill_ops();
}

}  // namespace mcd::kernels::cuda
