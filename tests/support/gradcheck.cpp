#include "gradcheck.h"

#include <cmath>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>

namespace mcd::testing {
namespace {

// Pointer to the i-th element (row-major order) of a possibly strided float64 tensor.
double* element(Tensor& t, std::int64_t flat) {
  std::int64_t off = 0;
  for (std::int64_t d = t.dim() - 1; d >= 0; --d) {
    const std::int64_t n = t.shape()[d];
    off += (flat % n) * t.strides()[d];
    flat /= n;
  }
  return t.data<double>() + off;
}

double dot(const Tensor& a, const Tensor& b) {
  const auto va = a.to_doubles(), vb = b.to_doubles();
  REQUIRE(va.size() == vb.size());
  double s = 0;
  for (std::size_t i = 0; i < va.size(); ++i)
    s += va[i] * vb[i];
  return s;
}

struct Worst {
  double excess = -1, num = 0, ana = 0;
  std::int64_t index = -1;
};

void compare(const std::string& what, const std::vector<double>& num,
             const std::vector<double>& ana, const GradCheckOptions& o) {
  REQUIRE(num.size() == ana.size());
  Worst w;
  for (std::size_t i = 0; i < num.size(); ++i) {
    const double excess = std::abs(num[i] - ana[i]) - (o.atol + o.rtol * std::abs(ana[i]));
    if (excess > w.excess) w = {excess, num[i], ana[i], static_cast<std::int64_t>(i)};
  }
  INFO(fmt::format("{}: worst element {} numeric {:.12g} analytic {:.12g}", what, w.index, w.num,
                   w.ana));
  CHECK(w.excess <= 0.0);
}

}  // namespace

Tensor random_tensor(const Shape& shape, Generator& gen, double lo, double hi) {
  return Tensor::uniform(shape, gen, lo, hi, DType::Float64);
}

void check_gradients(const std::string& name, const TensorFn& f, std::vector<Tensor> inputs,
                     std::uint64_t seed, const GradCheckOptions& o) {
  Generator gen(seed);
  std::vector<std::size_t> diff;  // indices of differentiable inputs
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].dtype() == DType::Float64) diff.push_back(i);

  auto eval = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    return f(in).contiguous();
  };
  const Tensor y0 = eval(inputs);
  const Tensor u = random_tensor(y0.shape(), gen);

  // Reverse mode.
  std::vector<Tensor> ana_grads;
  if (o.check_vjp) {
    std::vector<Tensor> leaves = inputs;
    std::vector<Tensor> wrt;
    for (auto i : diff) {
      // A leaf view of the same storage keeps non-contiguous strides.
      leaves[i] = inputs[i].detach();
      leaves[i].set_requires_grad(true);
      wrt.push_back(leaves[i]);
    }
    const Tensor y = f(leaves);
    REQUIRE(y.requires_grad());
    ana_grads = grad({y}, wrt, {u});
    for (std::size_t k = 0; k < diff.size(); ++k) {
      Tensor x = inputs[diff[k]];
      std::vector<double> num(static_cast<std::size_t>(x.numel()));
      for (std::int64_t j = 0; j < x.numel(); ++j) {
        double* p = element(x, j);
        const double orig = *p;
        *p = orig + o.eps;
        const double plus = dot(u, eval(inputs));
        *p = orig - o.eps;
        const double minus = dot(u, eval(inputs));
        *p = orig;
        num[j] = (plus - minus) / (2 * o.eps);
      }
      REQUIRE(ana_grads[k].shape() == x.shape());
      compare(fmt::format("{} vjp input {}", name, diff[k]), num, ana_grads[k].to_doubles(), o);
    }
  }

  // Forward mode.
  if (o.check_jvp) {
    std::vector<Tensor> tangents(inputs.size());
    for (auto i : diff)
      tangents[i] = random_tensor(inputs[i].shape(), gen);
    auto r = jvp([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{f(in)}; }, inputs,
                 tangents);
    const Tensor yt = r.tangents[0];
    REQUIRE(yt.shape() == y0.shape());
    std::vector<Tensor> plus = inputs, minus = inputs;
    for (auto i : diff) {
      NoGradGuard ng;
      plus[i] = inputs[i].contiguous().clone();
      minus[i] = inputs[i].contiguous().clone();
      plus[i].add_(tangents[i], o.eps);
      minus[i].add_(tangents[i], -o.eps);
    }
    const auto fp = eval(plus).to_doubles(), fm = eval(minus).to_doubles();
    std::vector<double> num(fp.size());
    for (std::size_t j = 0; j < fp.size(); ++j)
      num[j] = (fp[j] - fm[j]) / (2 * o.eps);
    compare(fmt::format("{} jvp", name), num, yt.to_doubles(), o);

    if (o.check_vjp) {
      double rhs = 0;
      for (std::size_t k = 0; k < diff.size(); ++k)
        rhs += dot(ana_grads[k], tangents[diff[k]]);
      const double lhs = dot(u, yt);
      INFO(fmt::format("{}: <u, Jv> = {:.15g}, <J^T u, v> = {:.15g}", name, lhs, rhs));
      CHECK(std::abs(lhs - rhs) <= 1e-9 * (1 + std::abs(lhs)));
    }
  }
}

std::vector<Tensor> check_parameter_derivatives(const std::vector<Tensor>& params,
                                                const std::function<Tensor()>& run,
                                                Generator& gen) {
  std::vector<Tensor> tangents;
  for (const auto& p : params)
    tangents.push_back(random_tensor(p.shape(), gen));
  Tensor y_tangent;
  {
    DualScope dual(params, tangents);
    y_tangent = run().tangent();
  }
  REQUIRE(y_tangent.defined());
  const double eps = 1e-6;
  auto shifted = [&](double step) {
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).add_(tangents[i], step);
    const Tensor y = run();
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).add_(tangents[i], -step);
    return y.to_doubles();
  };
  const auto yp = shifted(eps), ym = shifted(-eps);
  const auto ana = y_tangent.to_doubles();
  REQUIRE(ana.size() == yp.size());
  for (std::size_t j = 0; j < ana.size(); ++j) {
    const double num = (yp[j] - ym[j]) / (2 * eps);
    INFO(fmt::format("output {}: numeric {:.12g} analytic {:.12g}", j, num, ana[j]));
    CHECK(std::abs(num - ana[j]) <= 1e-5 + 1e-3 * std::abs(ana[j]));
  }
  const Tensor u = random_tensor(y_tangent.shape(), gen);
  const auto grads = grad({run()}, params, {u});
  double rhs = 0;
  for (std::size_t i = 0; i < params.size(); ++i)
    rhs += dot(grads[i], tangents[i]);
  const double lhs = dot(u, y_tangent);
  CHECK(lhs == Approx(rhs).epsilon(1e-9));
  return grads;
}

}  // namespace mcd::testing
