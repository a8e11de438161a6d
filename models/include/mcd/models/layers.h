// Layers with PyTorch's parameter names and default initialisation: Conv2d and Linear draw
// weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with a = sqrt(5));
// BatchNorm2d starts at weight 1, bias 0, running_mean 0, running_var 1. Inputs are NCHW.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mcd/engine/generator.h>
#include <mcd/engine/ops/conv.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/models/module.h>

namespace mcd::nn {

class Conv2d : public Module {
 public:
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size,
         Generator& gen, std::int64_t stride = 1, std::int64_t padding = 0, std::int64_t groups = 1,
         bool bias = true);
  Tensor forward(const Tensor& x) override;  // (N, C_in, H, W) -> (N, C_out, H', W')

  const Tensor& weight() const { return weight_; }  // (C_out, C_in / groups, k, k)
  const Tensor& bias() const { return bias_; }      // (C_out), undefined without bias
  std::int64_t in_channels() const { return in_channels_; }
  std::int64_t out_channels() const { return out_channels_; }
  const Conv2dOptions& options() const { return options_; }

 private:
  std::int64_t in_channels_, out_channels_;
  Conv2dOptions options_;
  Tensor weight_, bias_;
};

// Buffers: running_mean, running_var (C) and num_batches_tracked (int64 scalar), which
// counts training-mode forwards. Training normalises with batch statistics (biased
// variance) and updates the running ones with `momentum`; eval uses the running ones.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(std::int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C, H, W)
  // relu(forward(x)) as one fused op: the same values, statistics and gradients, without
  // keeping the pre-activation for the backward.
  Tensor forward_relu(const Tensor& x);
  // relu(forward(x) + residual) as one fused op (the end of a ResNet block), likewise.
  Tensor forward_add_relu(const Tensor& x, const Tensor& residual);

  const Tensor& weight() const { return weight_; }  // (C)
  const Tensor& bias() const { return bias_; }      // (C)
  const Tensor& running_mean() const { return running_mean_; }
  const Tensor& running_var() const { return running_var_; }
  std::int64_t num_batches_tracked() const;
  std::int64_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  double momentum() const { return momentum_; }

 private:
  Tensor run(const Tensor& x, bool relu, const Tensor& residual = Tensor());

  std::int64_t num_features_;
  double eps_, momentum_;
  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
};

class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)

  const Tensor& weight() const { return weight_; }  // (out, in)
  const Tensor& bias() const { return bias_; }      // (out), undefined without bias
  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }

 private:
  std::int64_t in_features_, out_features_;
  Tensor weight_, bias_;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};

// stride 0 means stride = kernel_size, as PyTorch's stride=None.
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(std::int64_t kernel_size, std::int64_t stride = 0, std::int64_t padding = 0);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C, H', W')
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

// Zero padding counts in the divisor (PyTorch's count_include_pad=True).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(std::int64_t kernel_size, std::int64_t stride = 0, std::int64_t padding = 0);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C, H', W')
  const Pool2dOptions& options() const { return options_; }

 private:
  Pool2dOptions options_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(std::int64_t output_size)
      : AdaptiveAvgPool2d(output_size, output_size) {}
  AdaptiveAvgPool2d(std::int64_t out_h, std::int64_t out_w);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C, out_h, out_w)

 private:
  std::int64_t out_h_, out_w_;
};

class Flatten : public Module {
 public:
  explicit Flatten(std::int64_t start_dim = 1, std::int64_t end_dim = -1)
      : start_dim_(start_dim), end_dim_(end_dim) {}
  Tensor forward(const Tensor& x) override;

 private:
  std::int64_t start_dim_, end_dim_;
};

// Inverted dropout with probability p. The mask generator is owned by the layer and seeded
// from `gen` at construction, so a model's randomness is fixed by the generator it was
// built with; generator() exposes it for checkpointing.
class Dropout : public Module {
 public:
  Dropout(double p, Generator& gen);
  Tensor forward(const Tensor& x) override;
  double p() const { return p_; }
  Generator& generator() { return gen_; }

 private:
  double p_;
  Generator gen_;
};

// Children are named "0", "1", ... in the order they are added; forward chains them.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    append(m);
    return m;
  }
  Tensor forward(const Tensor& x) override;
  std::size_t size() const { return modules_.size(); }
  const std::shared_ptr<Module>& operator[](std::size_t i) const;

 private:
  void append(std::shared_ptr<Module> m);
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace mcd::nn
