// The fused multi-student distillation loss against the composition of unfused engine ops
// (cross_entropy, kl_div_softmax, mul, mean) in float64: per-sample ce and kl, the losses,
// dL/dz, the per-sample JVP, and float64 gradient checks of the differentiable op. Also large
// logits, zero teacher probabilities, the no-teacher case, float32 vs float64, and bad inputs.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/engine/ops/softmax.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::distill::TeacherTargets;
using mcd::testing::check_gradients;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

struct Case {
  std::int64_t k = 0, b = 0, v = 0;
  double tau = 1.0;
  V logits;               // K x (B, V)
  Tensor teacher_logits;  // (B, V)
  Tensor labels;          // int64 (B)
  Tensor alpha, beta;     // (K, B)
};

// Random logits of magnitude `scale`; row 0 of every student has alpha = 0, row 1 beta = 0,
// row 2 (when B > 3) both, so the weighted terms are exercised in isolation.
Case make_case(std::int64_t k, std::int64_t b, std::int64_t v, double tau, std::uint64_t seed,
               double scale = 3.0) {
  Generator gen(seed);
  Case c;
  c.k = k;
  c.b = b;
  c.v = v;
  c.tau = tau;
  for (std::int64_t s = 0; s < k; ++s)
    c.logits.push_back(random_tensor({b, v}, gen, -scale, scale));
  c.teacher_logits = random_tensor({b, v}, gen, -scale, scale);
  std::vector<std::int64_t> y;
  for (std::int64_t i = 0; i < b; ++i)
    y.push_back(static_cast<std::int64_t>(gen.below(static_cast<std::uint64_t>(v))));
  c.labels = Tensor::from_vector(y, {b});
  c.alpha = random_tensor({k, b}, gen, 0.1, 1.5);
  c.beta = random_tensor({k, b}, gen, 0.1, 1.5);
  double* a = c.alpha.data<double>();
  double* be = c.beta.data<double>();
  for (std::int64_t s = 0; s < k; ++s) {
    if (b > 1) a[s * b + 0] = 0.0;
    if (b > 2) be[s * b + 1] = 0.0;
    if (b > 3) a[s * b + 2] = be[s * b + 2] = 0.0;
  }
  return c;
}

Tensor row_of(const Tensor& t, std::int64_t s) {
  return t.slice(0, s, s + 1).reshape({t.size(1)});
}

// The loss built from unfused engine ops, differentiable in the logits, alpha and beta.
struct Composed {
  V ce, kl, loss;  // K x (B), K x (B), K x scalar
  Tensor losses;   // (K)
};

Composed compose(const V& logits, const Tensor& teacher_logits, const Tensor& labels,
                 const Tensor& alpha, const Tensor& beta, double tau, bool teacher = true) {
  Composed r;
  V parts;
  for (std::size_t s = 0; s < logits.size(); ++s) {
    const auto si = static_cast<std::int64_t>(s);
    Tensor ce = cross_entropy(logits[s], labels);
    Tensor weighted = mul(row_of(alpha, si), ce);
    Tensor kl;
    if (teacher) {
      kl = kl_div_softmax(logits[s], teacher_logits, tau);
      weighted = add(weighted, mul(mul(row_of(beta, si), kl), tau * tau));
    } else {
      kl = Tensor::zeros(ce.shape(), ce.dtype());
    }
    Tensor loss = mean(weighted);
    r.ce.push_back(ce);
    r.kl.push_back(kl);
    r.loss.push_back(loss);
    parts.push_back(loss.reshape({1}));
  }
  r.losses = concat(parts, 0);
  return r;
}

Tensor stack(const V& rows) {
  V parts;
  for (const Tensor& t : rows)
    parts.push_back(t.unsqueeze(0));
  return concat(parts, 0);
}

// |actual - expected| <= atol + rtol |expected| everywhere; reports the worst element.
void expect_close(const std::string& what, const Tensor& actual, const Tensor& expected,
                  double atol, double rtol) {
  REQUIRE(actual.shape() == expected.shape());
  const auto a = actual.to_doubles(), e = expected.to_doubles();
  double worst = -std::numeric_limits<double>::infinity();
  std::size_t wi = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double excess = std::isfinite(a[i])
                              ? std::abs(a[i] - e[i]) - (atol + rtol * std::abs(e[i]))
                              : std::numeric_limits<double>::infinity();
    if (excess > worst) {
      worst = excess;
      wi = i;
    }
  }
  INFO(fmt::format("{}: worst element {} of shape {}: got {:.15g}, expected {:.15g}", what, wi,
                   shape_str(actual.shape()), a.empty() ? 0.0 : a[wi], e.empty() ? 0.0 : e[wi]));
  CHECK(worst <= 0.0);
}

// Fused forward, dL/dz and JVP against the composition, and distill_loss's value.
void check_against_composition(const Case& c, double atol = 1e-12, double rtol = 1e-10) {
  const std::string tag = fmt::format("K={} B={} V={} tau={}", c.k, c.b, c.v, c.tau);
  const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits, c.tau);
  const auto f = distill::fused_distill_loss(c.logits, teacher, c.labels, c.alpha, c.beta);

  V leaves;
  for (const Tensor& z : c.logits)
    leaves.push_back(z.detach().set_requires_grad(true));
  const Composed ref = compose(leaves, c.teacher_logits, c.labels, c.alpha, c.beta, c.tau);
  expect_close(tag + " ce", f.ce, stack(ref.ce).detach(), atol, rtol);
  expect_close(tag + " kl", f.kl, stack(ref.kl).detach(), atol, rtol);
  expect_close(tag + " loss", f.loss, ref.losses.detach(), atol, rtol);
  REQUIRE(f.grad_logits.shape() == Shape({c.k, c.b, c.v}));
  for (std::int64_t s = 0; s < c.k; ++s) {
    const auto su = static_cast<std::size_t>(s);
    const Tensor g = grad({ref.loss[su]}, {leaves[su]})[0];
    expect_close(fmt::format("{} grad_logits[{}]", tag, s),
                 f.grad_logits.slice(0, s, s + 1).reshape({c.b, c.v}), g, atol, rtol);
  }
  // Rows with alpha = beta = 0 have exactly zero gradient.
  if (c.b > 3)
    for (std::int64_t s = 0; s < c.k; ++s)
      for (double x : f.grad_logits.slice(0, s, s + 1).slice(1, 2, 3).to_doubles())
        CHECK(x == 0.0);

  const Tensor op = distill::distill_loss(c.logits, teacher, c.labels, c.alpha, c.beta);
  expect_close(tag + " distill_loss", op, f.loss, 0.0, 0.0);

  // Per-sample JVP against forward mode through the composition.
  Generator gen(99);
  V tangents;
  for (std::int64_t s = 0; s < c.k; ++s)
    tangents.push_back(random_tensor({c.b, c.v}, gen));
  const auto fj =
      distill::fused_distill_loss_jvp(c.logits, teacher, c.labels, c.alpha, c.beta, tangents);
  const auto r = jvp(
      [&](const V& z) {
        const Composed cz = compose(z, c.teacher_logits, c.labels, c.alpha, c.beta, c.tau);
        return V{stack(cz.ce), stack(cz.kl), cz.losses};
      },
      c.logits, tangents);
  expect_close(tag + " ce_t", fj.ce_t, r.tangents[0], atol, rtol);
  expect_close(tag + " kl_t", fj.kl_t, r.tangents[1], atol, rtol);
  expect_close(tag + " loss_t", fj.loss_t, r.tangents[2], atol, rtol);
}

V to_float32(const V& ts) {
  V out;
  for (const Tensor& t : ts)
    out.push_back(t.to(DType::Float32));
  return out;
}

}  // namespace

TEST_CASE("fused loss matches the composed engine ops", "[distill][fused_loss]") {
  for (std::int64_t k : {1, 3})
    for (double tau : {1.0, 2.5}) {
      check_against_composition(make_case(k, 6, 7, tau, 10 + static_cast<std::uint64_t>(k)));
      check_against_composition(make_case(k, 1, 5, tau, 20 + static_cast<std::uint64_t>(k)));
    }
  // Large enough that the kernels run their rows in parallel.
  check_against_composition(make_case(3, 70, 100, 2.0, 31));
  check_against_composition(make_case(2, 3, 1, 2.0, 32));  // one class: ce = kl = 0
}

TEST_CASE("fused loss is stable for logits of magnitude 1e4", "[distill][fused_loss]") {
  for (double tau : {1.0, 2.5}) {
    // Against the composition: the engine's ops are max-subtracted too.
    const Case big = make_case(3, 8, 9, tau, 41, 1e4);
    check_against_composition(big, 1e-9, 1e-10);

    // Against the same logits shifted by -1e4, as computed on moderate values: every output
    // is invariant to a per-row shift of the logits.
    const Case small = make_case(2, 5, 6, tau, 42);
    Case shifted = small;
    shifted.logits.clear();
    for (const Tensor& z : small.logits)
      shifted.logits.push_back(add(z, 1e4));
    shifted.teacher_logits = add(small.teacher_logits, -1e4);
    const TeacherTargets t_small = distill::make_teacher_targets(small.teacher_logits, tau);
    const TeacherTargets t_shift = distill::make_teacher_targets(shifted.teacher_logits, tau);
    const auto a =
        distill::fused_distill_loss(small.logits, t_small, small.labels, small.alpha, small.beta);
    const auto b = distill::fused_distill_loss(shifted.logits, t_shift, shifted.labels,
                                               shifted.alpha, shifted.beta);
    expect_close("shifted ce", b.ce, a.ce, 1e-9, 1e-9);
    expect_close("shifted kl", b.kl, a.kl, 1e-9, 1e-9);
    expect_close("shifted loss", b.loss, a.loss, 1e-9, 1e-9);
    expect_close("shifted grad_logits", b.grad_logits, a.grad_logits, 1e-12, 1e-9);
  }
}

TEST_CASE("a NaN logit is not hidden by the max-subtraction", "[distill][fused_loss]") {
  for (DType dtype : {DType::Float64, DType::Float32}) {
    const Case c = make_case(2, 3, 6, 2.0, 45);
    V z;
    for (const Tensor& t : c.logits)
      z.push_back(t.to(dtype));
    std::vector<double> bad = c.logits[1].to_doubles();
    bad[1 * 6 + 4] = std::numeric_limits<double>::quiet_NaN();  // row 1, not its label
    REQUIRE(c.labels.to_doubles()[1] != 4.0);
    z[1] = Tensor::from_doubles(bad, {3, 6}, dtype);
    const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits.to(dtype), 2.0);
    const auto f =
        distill::fused_distill_loss(z, teacher, c.labels, c.alpha.to(dtype), c.beta.to(dtype));
    const auto ce = f.ce.to_doubles(), kl = f.kl.to_doubles(), loss = f.loss.to_doubles();
    CHECK(std::isnan(ce[1 * 3 + 1]));
    CHECK(std::isnan(kl[1 * 3 + 1]));
    CHECK(std::isnan(loss[1]));
    CHECK(std::isfinite(loss[0]));
    CHECK(std::isfinite(ce[1 * 3 + 0]));
  }
}

TEST_CASE("zero teacher probabilities contribute nothing to the KL", "[distill][fused_loss]") {
  // Teacher rows 0 at class c and -1e4 elsewhere: qT is exactly one-hot (exp underflows to
  // 0), so kl = -log q[c] and dkl/dz = (q - onehot(c)) / tau.
  const std::int64_t k = 2, b = 4, v = 6;
  const double tau = 1.0;
  Case c = make_case(k, b, v, tau, 51);
  std::vector<double> zt(static_cast<std::size_t>(b * v), -1e4);
  std::vector<std::int64_t> target = {3, 0, 5, 3};
  for (std::int64_t i = 0; i < b; ++i)
    zt[static_cast<std::size_t>(i * v + target[static_cast<std::size_t>(i)])] = 0.0;
  c.teacher_logits = Tensor::from_doubles(zt, {b, v}, DType::Float64);
  const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits, tau);
  for (double p : teacher.prob.to_doubles())
    REQUIRE((p == 0.0 || p == 1.0));
  // Alpha zero everywhere isolates the KL gradient.
  const Tensor alpha0 = Tensor::zeros({k, b}, DType::Float64);
  const auto f = distill::fused_distill_loss(c.logits, teacher, c.labels, alpha0, c.beta);
  for (std::int64_t s = 0; s < k; ++s) {
    const auto su = static_cast<std::size_t>(s);
    const Tensor logq = log_softmax(c.logits[su], 1, tau);
    const Tensor q = softmax(c.logits[su], 1, tau);
    const auto lq = logq.to_doubles(), qv = q.to_doubles();
    const auto beta = row_of(c.beta, s).to_doubles();
    std::vector<double> kl(static_cast<std::size_t>(b)), grad(static_cast<std::size_t>(b * v));
    for (std::int64_t i = 0; i < b; ++i) {
      const auto iu = static_cast<std::size_t>(i);
      kl[iu] = -lq[static_cast<std::size_t>(i * v + target[iu])];
      for (std::int64_t j = 0; j < v; ++j) {
        const auto e = static_cast<std::size_t>(i * v + j);
        grad[e] = tau * beta[iu] / static_cast<double>(b) * (qv[e] - (j == target[iu] ? 1.0 : 0.0));
      }
    }
    expect_close("one-hot teacher kl", row_of(f.kl, s),
                 Tensor::from_doubles(kl, {b}, DType::Float64), 1e-12, 1e-12);
    expect_close("one-hot teacher grad", f.grad_logits.slice(0, s, s + 1).reshape({b, v}),
                 Tensor::from_doubles(grad, {b, v}, DType::Float64), 1e-14, 1e-12);
  }
  for (double x : f.loss.to_doubles())
    CHECK(std::isfinite(x));
  check_against_composition(c);

  // Targets given with log 0 = -inf where the probability is 0: still exactly 0 per entry.
  TeacherTargets exact;
  exact.tau = tau;
  exact.prob = teacher.prob.clone();
  std::vector<double> lp = exact.prob.to_doubles();
  for (double& x : lp)
    x = std::log(x);
  exact.log_prob = Tensor::from_doubles(lp, {b, v}, DType::Float64);
  const auto fe = distill::fused_distill_loss(c.logits, exact, c.labels, alpha0, c.beta);
  expect_close("-inf teacher log_prob kl", fe.kl, f.kl, 1e-12, 1e-12);
  expect_close("-inf teacher log_prob loss", fe.loss, f.loss, 1e-12, 1e-12);
}

TEST_CASE("no teacher: pure cross-entropy", "[distill][fused_loss]") {
  const Case c = make_case(3, 6, 5, 2.0, 61);
  const Tensor beta0 = Tensor::zeros({c.k, c.b}, DType::Float64);
  const TeacherTargets none = distill::no_teacher(2.0);
  REQUIRE_FALSE(none.defined());
  const auto f = distill::fused_distill_loss(c.logits, none, c.labels, c.alpha, beta0);
  V leaves;
  for (const Tensor& z : c.logits)
    leaves.push_back(z.detach().set_requires_grad(true));
  const Composed ref = compose(leaves, Tensor(), c.labels, c.alpha, beta0, c.tau, false);
  expect_close("no teacher ce", f.ce, stack(ref.ce).detach(), 1e-12, 1e-10);
  for (double x : f.kl.to_doubles())
    CHECK(x == 0.0);
  expect_close("no teacher loss", f.loss, ref.losses.detach(), 1e-12, 1e-10);
  for (std::int64_t s = 0; s < c.k; ++s) {
    const auto su = static_cast<std::size_t>(s);
    expect_close("no teacher grad", f.grad_logits.slice(0, s, s + 1).reshape({c.b, c.v}),
                 grad({ref.loss[su]}, {leaves[su]})[0], 1e-12, 1e-10);
  }
  Generator gen(62);
  V tangents;
  for (std::int64_t s = 0; s < c.k; ++s)
    tangents.push_back(random_tensor({c.b, c.v}, gen));
  const auto fj =
      distill::fused_distill_loss_jvp(c.logits, none, c.labels, c.alpha, beta0, tangents);
  const auto r = jvp(
      [&](const V& z) {
        const Composed cz = compose(z, Tensor(), c.labels, c.alpha, beta0, c.tau, false);
        return V{stack(cz.ce), cz.losses};
      },
      c.logits, tangents);
  expect_close("no teacher ce_t", fj.ce_t, r.tangents[0], 1e-12, 1e-10);
  for (double x : fj.kl_t.to_doubles())
    CHECK(x == 0.0);
  expect_close("no teacher loss_t", fj.loss_t, r.tangents[1], 1e-12, 1e-10);

  // The op form, differentiable in the logits and alpha.
  const Tensor labels = c.labels;
  check_gradients("distill_loss no teacher",
                  [&](const V& in) {
                    return distill::distill_loss({in[0], in[1], in[2]}, none, labels, in[3], beta0);
                  },
                  {c.logits[0], c.logits[1].transpose(0, 1).contiguous().transpose(0, 1),
                   c.logits[2], c.alpha});
}

TEST_CASE("distill_loss gradient checks in every input", "[distill][fused_loss][grad]") {
  for (std::int64_t k : {1, 3})
    for (double tau : {1.0, 2.5}) {
      const Case c = make_case(k, 5, 4, tau, 70 + static_cast<std::uint64_t>(k));
      const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits, tau);
      // Non-contiguous inputs: logits stored transposed, alpha and beta stored as (B, K).
      V inputs;
      for (const Tensor& z : c.logits)
        inputs.push_back(z.transpose(0, 1).contiguous().transpose(0, 1));
      inputs.push_back(c.alpha.transpose(0, 1).contiguous().transpose(0, 1));
      inputs.push_back(c.beta.transpose(0, 1).contiguous().transpose(0, 1));
      REQUIRE_FALSE(inputs[0].is_contiguous());
      const Tensor labels = c.labels;
      check_gradients(
          fmt::format("distill_loss K={} tau={}", k, tau),
          [&, k](const V& in) {
            const V z(in.begin(), in.begin() + k);
            return distill::distill_loss(z, teacher, labels, in[static_cast<std::size_t>(k)],
                                         in[static_cast<std::size_t>(k) + 1]);
          },
          inputs);
    }
  // The teacher made inside the function: constant, since its targets are detached.
  const Case c = make_case(2, 4, 3, 2.0, 75);
  const Tensor labels = c.labels, zt = c.teacher_logits;
  check_gradients("distill_loss teacher inside",
                  [&](const V& in) {
                    return distill::distill_loss({in[0], in[1]},
                                                 distill::make_teacher_targets(zt, 2.0), labels,
                                                 in[2], in[3]);
                  },
                  {c.logits[0], c.logits[1], c.alpha, c.beta});
}

TEST_CASE("distill_loss records only what is needed", "[distill][fused_loss]") {
  const Case c = make_case(2, 4, 5, 2.0, 81);
  const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits, 2.0);
  {
    NoGradGuard no_grad;
    Tensor a = c.alpha.detach().set_requires_grad(true);
    CHECK_FALSE(distill::distill_loss(c.logits, teacher, c.labels, a, c.beta).requires_grad());
  }
  // Only alpha requires grad: for a cotangent g, dalpha_ki = g_k ce_ki / B, and no logit
  // gradient is needed.
  Tensor a = c.alpha.detach().set_requires_grad(true);
  const Tensor loss = distill::distill_loss(c.logits, teacher, c.labels, a, c.beta);
  REQUIRE(loss.requires_grad());
  const Tensor g = Tensor::from_doubles({1.0, -2.0}, {2}, DType::Float64);
  const Tensor da = grad({loss}, {a}, {g})[0];
  const auto f = distill::fused_distill_loss(c.logits, teacher, c.labels, c.alpha, c.beta);
  expect_close("dalpha", da, mul(f.ce, mul(g.reshape({2, 1}), 1.0 / static_cast<double>(c.b))),
               1e-14, 1e-12);
}

TEST_CASE("float32 agrees with float64", "[distill][fused_loss]") {
  for (double tau : {1.0, 2.5}) {
    const Case c = make_case(3, 64, 100, tau, 91);  // parallel rows
    const TeacherTargets t64 = distill::make_teacher_targets(c.teacher_logits, tau);
    const TeacherTargets t32 =
        distill::make_teacher_targets(c.teacher_logits.to(DType::Float32), tau);
    const V z32 = to_float32(c.logits);
    const Tensor y = c.labels, a32 = c.alpha.to(DType::Float32), b32 = c.beta.to(DType::Float32);
    const auto f64 = distill::fused_distill_loss(c.logits, t64, y, c.alpha, c.beta);
    const auto f32 = distill::fused_distill_loss(z32, t32, y, a32, b32);
    REQUIRE(f32.loss.dtype() == DType::Float32);
    REQUIRE(f32.grad_logits.dtype() == DType::Float32);
    expect_close("float32 ce", f32.ce, f64.ce, 1e-5, 1e-5);
    expect_close("float32 kl", f32.kl, f64.kl, 1e-5, 1e-5);
    expect_close("float32 loss", f32.loss, f64.loss, 1e-5, 1e-5);
    expect_close("float32 grad_logits", f32.grad_logits, f64.grad_logits, 1e-7, 1e-5);

    Generator gen(92);
    V t64v;
    for (std::int64_t s = 0; s < c.k; ++s)
      t64v.push_back(random_tensor({c.b, c.v}, gen));
    const auto j64 = distill::fused_distill_loss_jvp(c.logits, t64, y, c.alpha, c.beta, t64v);
    const auto j32 = distill::fused_distill_loss_jvp(z32, t32, y, a32, b32, to_float32(t64v));
    expect_close("float32 ce_t", j32.ce_t, j64.ce_t, 1e-5, 1e-5);
    expect_close("float32 kl_t", j32.kl_t, j64.kl_t, 1e-5, 1e-5);
    expect_close("float32 loss_t", j32.loss_t, j64.loss_t, 1e-5, 1e-5);
    const Tensor op32 = distill::distill_loss(z32, t32, y, a32, b32);
    expect_close("float32 distill_loss", op32, f32.loss, 0.0, 0.0);

    // Large logits in float32 stay finite and close to float64.
    const Case big = make_case(2, 6, 9, tau, 93, 1e4);
    const auto g64 = distill::fused_distill_loss(
        big.logits, distill::make_teacher_targets(big.teacher_logits, tau), big.labels, big.alpha,
        big.beta);
    const auto g32 = distill::fused_distill_loss(
        to_float32(big.logits),
        distill::make_teacher_targets(big.teacher_logits.to(DType::Float32), tau), big.labels,
        big.alpha.to(DType::Float32), big.beta.to(DType::Float32));
    // Float32 logits of magnitude 1e4 are themselves rounded by up to 5e-4, so the losses
    // (of order 1e4) agree to that absolute level, not to 1e-5.
    expect_close("float32 big loss", g32.loss, g64.loss, 1e-2, 1e-5);
    for (double x : g32.grad_logits.to_doubles())
      REQUIRE(std::isfinite(x));
  }
}

TEST_CASE("fused loss rejects bad inputs with clear errors", "[distill][fused_loss]") {
  const Case c = make_case(2, 4, 5, 2.0, 101);
  const TeacherTargets teacher = distill::make_teacher_targets(c.teacher_logits, 2.0);
  const Tensor& y = c.labels;
  using Catch::Contains;
  auto fused = [&](const V& z, const TeacherTargets& t, const Tensor& labels, const Tensor& a,
                   const Tensor& b) { return distill::fused_distill_loss(z, t, labels, a, b); };

  REQUIRE_THROWS_WITH(fused({}, teacher, y, c.alpha, c.beta),
                      Contains("fused_distill_loss") && Contains("at least one student"));
  Generator gen(102);
  const Tensor narrow = random_tensor({4, 6}, gen);
  REQUIRE_THROWS_WITH(fused({c.logits[0], narrow}, teacher, y, c.alpha, c.beta),
                      Contains("student 1") && Contains("[4, 6]") && Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(
      fused({c.logits[0], c.logits[1].to(DType::Float32)}, teacher, y, c.alpha, c.beta),
      Contains("student 1") && Contains("float32"));
  REQUIRE_THROWS_WITH(fused({c.logits[0].reshape({20})}, teacher, y, c.alpha, c.beta),
                      Contains("(B, V)") && Contains("[20]"));
  const TeacherTargets bad_teacher = distill::make_teacher_targets(random_tensor({3, 5}, gen), 2.0);
  REQUIRE_THROWS_WITH(fused(c.logits, bad_teacher, y, c.alpha, c.beta),
                      Contains("teacher prob") && Contains("[3, 5]"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher, y.to(DType::Float64), c.alpha, c.beta),
                      Contains("labels must be int64"));
  REQUIRE_THROWS_WITH(
      fused(c.logits, teacher, Tensor::from_vector<std::int64_t>({0, 1, 2}, {3}), c.alpha, c.beta),
      Contains("labels must be int64 of shape [4]"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher, Tensor::from_vector<std::int64_t>({0, 1, 7, 2}, {4}),
                            c.alpha, c.beta),
                      Contains("label 7 of row 2") && Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher,
                            Tensor::from_vector<std::int64_t>({0, -1, 3, 2}, {4}), c.alpha, c.beta),
                      Contains("label -1 of row 1"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher, y, c.alpha.transpose(0, 1), c.beta),
                      Contains("alpha") && Contains("[2, 4]") && Contains("[4, 2]"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher, y, c.alpha, c.beta.to(DType::Float32)),
                      Contains("beta must be float64"));
  REQUIRE_THROWS_WITH(fused(c.logits, teacher, y, Tensor(), c.beta), Contains("alpha"));

  // No teacher: the first non-zero beta is named.
  Tensor beta = Tensor::zeros({2, 4}, DType::Float64);
  beta.data<double>()[1 * 4 + 2] = 0.5;
  beta.data<double>()[1 * 4 + 3] = 0.7;
  REQUIRE_THROWS_WITH(fused(c.logits, distill::no_teacher(2.0), y, c.alpha, beta),
                      Contains("beta[1, 2] = 0.5") && Contains("no teacher"));
  REQUIRE_NOTHROW(
      fused(c.logits, distill::no_teacher(2.0), y, c.alpha, Tensor::zeros({2, 4}, DType::Float64)));

  REQUIRE_THROWS_WITH(distill::make_teacher_targets(c.teacher_logits, 0.0),
                      Contains("make_teacher_targets") && Contains("tau"));
  REQUIRE_THROWS_WITH(distill::make_teacher_targets(c.teacher_logits.reshape({20}), 1.0),
                      Contains("make_teacher_targets") && Contains("[20]"));
  REQUIRE_THROWS_WITH(distill::no_teacher(-1.0), Contains("tau"));

  REQUIRE_THROWS_WITH(
      distill::fused_distill_loss_jvp(c.logits, teacher, y, c.alpha, c.beta, {c.logits[0]}),
      Contains("fused_distill_loss_jvp") && Contains("1 logit tangents for 2 students"));
  REQUIRE_THROWS_WITH(
      distill::fused_distill_loss_jvp(c.logits, teacher, y, c.alpha, c.beta, {c.logits[0], narrow}),
      Contains("tangent of student 1") && Contains("[4, 6]"));
  REQUIRE_THROWS_WITH(distill::distill_loss(c.logits, teacher, y, c.alpha, c.beta.reshape({8})),
                      Contains("distill_loss: beta"));
}
