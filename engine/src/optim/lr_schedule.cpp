// Closed forms of the learning-rate schedules. Warm-restart periods are found with integer
// arithmetic, so a restart lands exactly on its step (no floating log rounding).
#include <cmath>
#include <limits>
#include <numbers>

#include <mcd/engine/error.h>
#include <mcd/engine/optim/lr_schedule.h>

namespace mcd::optim {
namespace {

void check_step(const char* schedule, std::int64_t step) {
  MCD_CHECK(step >= 0, "{}::lr_at: step must be >= 0, got {}", schedule, step);
}

void check_rate(const char* schedule, const char* field, double v) {
  MCD_CHECK(std::isfinite(v) && v >= 0, "{}: {} must be finite and >= 0, got {}", schedule, field,
            v);
}

double cosine(double base_lr, double eta_min, double t, double period) {
  return eta_min + (base_lr - eta_min) * (1.0 + std::cos(std::numbers::pi * t / period)) / 2.0;
}

}  // namespace

Constant::Constant(double lr) : lr_(lr) {
  check_rate("Constant", "lr", lr);
}

double Constant::lr_at(std::int64_t step) const {
  check_step("Constant", step);
  return lr_;
}

CosineAnnealing::CosineAnnealing(double base_lr, std::int64_t t_max, double eta_min)
    : base_lr_(base_lr), eta_min_(eta_min), t_max_(t_max) {
  check_rate("CosineAnnealing", "base_lr", base_lr);
  check_rate("CosineAnnealing", "eta_min", eta_min);
  MCD_CHECK(t_max >= 1, "CosineAnnealing: t_max must be >= 1, got {}", t_max);
}

double CosineAnnealing::lr_at(std::int64_t step) const {
  check_step("CosineAnnealing", step);
  return cosine(base_lr_, eta_min_, static_cast<double>(step), static_cast<double>(t_max_));
}

CosineWarmRestarts::CosineWarmRestarts(double base_lr, std::int64_t t_0, std::int64_t t_mult,
                                       double eta_min)
    : base_lr_(base_lr), eta_min_(eta_min), t_0_(t_0), t_mult_(t_mult) {
  check_rate("CosineWarmRestarts", "base_lr", base_lr);
  check_rate("CosineWarmRestarts", "eta_min", eta_min);
  MCD_CHECK(t_0 >= 1, "CosineWarmRestarts: t_0 must be >= 1, got {}", t_0);
  MCD_CHECK(t_mult >= 1, "CosineWarmRestarts: t_mult must be >= 1, got {}", t_mult);
}

double CosineWarmRestarts::lr_at(std::int64_t step) const {
  check_step("CosineWarmRestarts", step);
  std::int64_t t_cur = step, t_i = t_0_;
  double period = static_cast<double>(t_0_);
  if (t_mult_ == 1) {
    t_cur = step % t_0_;
  } else {
    // Periods grow geometrically, so this loop runs O(log step) times.
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    while (t_cur >= t_i) {
      t_cur -= t_i;
      period = static_cast<double>(t_i) * static_cast<double>(t_mult_);
      if (t_i > kMax / t_mult_) break;  // the next period is longer than any step
      t_i *= t_mult_;
    }
  }
  return cosine(base_lr_, eta_min_, static_cast<double>(t_cur), period);
}

StepDecay::StepDecay(double base_lr, std::int64_t step_size, double gamma)
    : base_lr_(base_lr), gamma_(gamma), step_size_(step_size) {
  check_rate("StepDecay", "base_lr", base_lr);
  check_rate("StepDecay", "gamma", gamma);
  MCD_CHECK(step_size >= 1, "StepDecay: step_size must be >= 1, got {}", step_size);
}

double StepDecay::lr_at(std::int64_t step) const {
  check_step("StepDecay", step);
  return base_lr_ * std::pow(gamma_, static_cast<double>(step / step_size_));
}

}  // namespace mcd::optim
