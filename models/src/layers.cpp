// Layer constructors (argument checks, PyTorch default initialisation) and forwards, each a
// thin call into the engine's differentiable ops with the shape checked against the layer
// so that errors name the layer and its configuration.
#include <cmath>
#include <typeinfo>

#include <mcd/engine/ops/batch_norm.h>
#include <mcd/engine/ops/dropout.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/linalg.h>
#include <mcd/models/layers.h>

namespace mcd::nn {
namespace {

// kaiming_uniform_(a = sqrt(5)) and PyTorch's bias rule both reduce to this bound.
double fan_in_bound(std::int64_t fan_in) {
  return 1.0 / std::sqrt(static_cast<double>(fan_in));
}

Pool2dOptions pool_options(const char* layer, std::int64_t kernel, std::int64_t stride,
                           std::int64_t padding) {
  if (stride == 0) stride = kernel;
  MCD_CHECK(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel,
            "{}: invalid kernel_size {}, stride {}, padding {} (need kernel > 0, stride > 0, "
            "0 <= padding <= kernel / 2)",
            layer, kernel, stride, padding);
  return {kernel, kernel, stride, stride, padding, padding};
}

void check_nchw(const char* layer, const Tensor& x) {
  check_defined(layer, x);
  MCD_CHECK(x.dim() == 4, "{}: expected an (N, C, H, W) input, got shape {}", layer,
            shape_str(x.shape()));
}

}  // namespace

// ---- Conv2d

Conv2d::Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
               Generator& gen, std::int64_t stride, std::int64_t padding, std::int64_t groups,
               bool bias)
    : in_channels_(in_channels), out_channels_(out_channels) {
  MCD_CHECK(in_channels > 0 && out_channels > 0 && kernel_size > 0 && stride > 0 && padding >= 0 &&
                groups > 0,
            "Conv2d: invalid configuration in {}, out {}, kernel {}, stride {}, padding {}, "
            "groups {}",
            in_channels, out_channels, kernel_size, stride, padding, groups);
  MCD_CHECK(in_channels % groups == 0 && out_channels % groups == 0,
            "Conv2d: groups {} must divide in_channels {} and out_channels {}", groups, in_channels,
            out_channels);
  options_ = {stride, stride, padding, padding, groups};
  const std::int64_t fan_in = in_channels / groups * kernel_size * kernel_size;
  const double bound = fan_in_bound(fan_in);
  weight_ = register_parameter(
      "weight", Tensor::uniform({out_channels, in_channels / groups, kernel_size, kernel_size}, gen,
                                -bound, bound));
  if (bias) bias_ = register_parameter("bias", Tensor::uniform({out_channels}, gen, -bound, bound));
}

Tensor Conv2d::forward(const Tensor& x) {
  check_nchw("Conv2d", x);
  MCD_CHECK(x.size(1) == in_channels_,
            "Conv2d: expected {} input channels, got input of shape {} (weight {})", in_channels_,
            shape_str(x.shape()), shape_str(weight_.shape()));
  return conv2d(x, weight_, bias_, options_);
}

// ---- BatchNorm2d

BatchNorm2d::BatchNorm2d(std::int64_t num_features, double eps, double momentum)
    : num_features_(num_features), eps_(eps), momentum_(momentum) {
  MCD_CHECK(num_features > 0 && eps > 0 && momentum >= 0 && momentum <= 1,
            "BatchNorm2d: invalid num_features {}, eps {}, momentum {}", num_features, eps,
            momentum);
  weight_ = register_parameter("weight", Tensor::ones({num_features}));
  bias_ = register_parameter("bias", Tensor::zeros({num_features}));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var_ = register_buffer("running_var", Tensor::ones({num_features}));
  num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::Int64));
}

std::int64_t BatchNorm2d::num_batches_tracked() const {
  return num_batches_tracked_.data<std::int64_t>()[0];
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  return run(x, false);
}

Tensor BatchNorm2d::forward_relu(const Tensor& x) {
  return run(x, true);
}

Tensor BatchNorm2d::forward_add_relu(const Tensor& x, const Tensor& residual) {
  MCD_CHECK(residual.defined(), "BatchNorm2d::forward_add_relu: the residual is undefined");
  return run(x, true, residual);
}

Tensor BatchNorm2d::run(const Tensor& x, bool relu, const Tensor& residual) {
  check_nchw("BatchNorm2d", x);
  MCD_CHECK(x.size(1) == num_features_, "BatchNorm2d: expected {} channels, got input of shape {}",
            num_features_, shape_str(x.shape()));
  const bool training = is_training();
  const BatchNormOptions options{training, momentum_, eps_, relu};
  Tensor y = residual.defined()
                 ? batch_norm_add(x, weight_, bias_, running_mean_, running_var_, residual, options)
                 : batch_norm(x, weight_, bias_, running_mean_, running_var_, options);
  if (training) num_batches_tracked_.data<std::int64_t>()[0] += 1;
  return y;
}

// ---- Linear

Linear::Linear(std::int64_t in_features, std::int64_t out_features, Generator& gen, bool bias)
    : in_features_(in_features), out_features_(out_features) {
  MCD_CHECK(in_features > 0 && out_features > 0, "Linear: invalid in_features {}, out_features {}",
            in_features, out_features);
  const double bound = fan_in_bound(in_features);
  weight_ = register_parameter("weight",
                               Tensor::uniform({out_features, in_features}, gen, -bound, bound));
  if (bias) bias_ = register_parameter("bias", Tensor::uniform({out_features}, gen, -bound, bound));
}

Tensor Linear::forward(const Tensor& x) {
  check_defined("Linear", x);
  MCD_CHECK(x.dim() >= 1 && x.shape().back() == in_features_,
            "Linear: expected an input (..., {}), got shape {}", in_features_,
            shape_str(x.shape()));
  return linear(x, weight_, bias_);
}

// ---- parameter-free layers

Tensor ReLU::forward(const Tensor& x) {
  return relu(x);
}

MaxPool2d::MaxPool2d(std::int64_t kernel_size, std::int64_t stride, std::int64_t padding)
    : options_(pool_options("MaxPool2d", kernel_size, stride, padding)) {}

Tensor MaxPool2d::forward(const Tensor& x) {
  check_nchw("MaxPool2d", x);
  return max_pool2d(x, options_);
}

AvgPool2d::AvgPool2d(std::int64_t kernel_size, std::int64_t stride, std::int64_t padding)
    : options_(pool_options("AvgPool2d", kernel_size, stride, padding)) {}

Tensor AvgPool2d::forward(const Tensor& x) {
  check_nchw("AvgPool2d", x);
  return avg_pool2d(x, options_);
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(std::int64_t out_h, std::int64_t out_w)
    : out_h_(out_h), out_w_(out_w) {
  MCD_CHECK(out_h > 0 && out_w > 0, "AdaptiveAvgPool2d: invalid output size ({}, {})", out_h,
            out_w);
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  check_nchw("AdaptiveAvgPool2d", x);
  return adaptive_avg_pool2d(x, out_h_, out_w_);
}

Tensor Flatten::forward(const Tensor& x) {
  check_defined("Flatten", x);
  return x.flatten(start_dim_, end_dim_);
}

Dropout::Dropout(double p, Generator& gen) : p_(p), gen_(gen.next_u64()) {
  MCD_CHECK(p >= 0.0 && p < 1.0, "Dropout: probability must be in [0, 1), got {}", p);
}

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p_, is_training(), gen_);
}

// ---- Sequential

Sequential::Sequential(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules)
    append(m);
}

void Sequential::append(std::shared_ptr<Module> m) {
  register_module(std::to_string(modules_.size()), m);
  modules_.push_back(std::move(m));
}

const std::shared_ptr<Module>& Sequential::operator[](std::size_t i) const {
  MCD_CHECK(i < modules_.size(), "Sequential: index {} out of range for {} modules", i,
            modules_.size());
  return modules_[i];
}

// A BatchNorm2d directly followed by a ReLU runs as the fused op (BatchNorm2d::forward_relu):
// the same result without keeping the pre-activation for the backward. Exact types only, so a
// subclass's own forward is never bypassed.
Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (std::size_t i = 0; i < modules_.size(); ++i) {
    Module& m = *modules_[i];
    const Module* next = i + 1 < modules_.size() ? modules_[i + 1].get() : nullptr;
    if (typeid(m) == typeid(BatchNorm2d) && next != nullptr && typeid(*next) == typeid(ReLU)) {
      y = static_cast<BatchNorm2d&>(m).forward_relu(y);
      ++i;  // the ReLU is done
    } else {
      y = m.forward(y);
    }
  }
  return y;
}

}  // namespace mcd::nn
