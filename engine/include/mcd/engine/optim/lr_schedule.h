// Learning-rate schedules as pure functions of the step (PyTorch's closed forms). A schedule
// holds no state, so resuming a run needs only its step count. The step is whatever unit the
// caller counts (epochs or iterations), starting at 0; a negative step is an error.
#pragma once
#include <cstdint>

namespace mcd::optim {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr_at(std::int64_t step) const = 0;
};

class Constant final : public LrSchedule {
 public:
  explicit Constant(double lr);
  double lr_at(std::int64_t step) const override;

 private:
  double lr_;
};

// CosineAnnealingLR: eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2. Past
// t_max the closed form keeps going (the rate climbs back), as PyTorch's does.
class CosineAnnealing final : public LrSchedule {
 public:
  CosineAnnealing(double base_lr, std::int64_t t_max, double eta_min = 0.0);
  double lr_at(std::int64_t step) const override;

 private:
  double base_lr_, eta_min_;
  std::int64_t t_max_;
};

// CosineAnnealingWarmRestarts: cosine from base_lr down towards eta_min over a period of t_0
// steps, restarting at base_lr; each period is t_mult times longer than the one before.
class CosineWarmRestarts final : public LrSchedule {
 public:
  CosineWarmRestarts(double base_lr, std::int64_t t_0, std::int64_t t_mult = 1,
                     double eta_min = 0.0);
  double lr_at(std::int64_t step) const override;

 private:
  double base_lr_, eta_min_;
  std::int64_t t_0_, t_mult_;
};

// StepLR: base_lr * gamma^floor(t / step_size).
class StepDecay final : public LrSchedule {
 public:
  StepDecay(double base_lr, std::int64_t step_size, double gamma = 0.1);
  double lr_at(std::int64_t step) const override;

 private:
  double base_lr_, gamma_;
  std::int64_t step_size_;
};

}  // namespace mcd::optim
