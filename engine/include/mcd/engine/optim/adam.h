// Adam (torch.optim.Adam: L2 weight decay added to the gradient) and AdamW
// (torch.optim.AdamW: decoupled decay p *= 1 - lr * weight_decay before the Adam update),
// both with bias correction. Step counts are per parameter: a step without a gradient for
// a parameter neither moves it nor advances its count, as in PyTorch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include <mcd/engine/optim/optimizer.h>

namespace mcd::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};

// Same fields as AdamOptions; only the weight-decay default differs (PyTorch's AdamW).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// Per parameter, with g its gradient and t its step count after incrementing:
//   Adam:  g += weight_decay * p          AdamW: p *= 1 - lr * weight_decay
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options = {});

  void step() override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& s, const std::string& source = "optimizer state") override;

  AdamOptions options() const;  // .lr is the current lr()
  bool decoupled_weight_decay() const { return decoupled_; }
  std::int64_t step_count(std::size_t i) const;  // steps parameter i has taken
  Tensor exp_avg(std::size_t i) const;           // copies; undefined before the first step
  Tensor exp_avg_sq(std::size_t i) const;

 protected:
  Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled);

 private:
  AdamOptions options_;
  bool decoupled_;
  std::vector<std::int64_t> steps_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // undefined until the parameter's first step
};

class AdamW final : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = {});
};

}  // namespace mcd::optim
