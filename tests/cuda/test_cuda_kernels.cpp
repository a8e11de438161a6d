// The CUDA fused distillation loss and its JVP against the CPU kernels (the reference), on
// random inputs of odd and realistic shapes: both the warp-per-row and block-per-row paths,
// 16-byte and scalar accesses, logits of magnitude 1e4, zero alpha/beta rows, zero teacher
// probabilities, no teacher, null gradients and tangents. Outputs are NaN-poisoned first.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/kernels/cpu/distill_loss.h>
#include <mcd/kernels/cuda/distill_loss.h>

#include "cuda/cuda_test_support.h"

using mcd::kernels::cuda::Stream;
using mcd::testing::DeviceArray;
using mcd::testing::parity_rtol;
using mcd::testing::require_close;

namespace {

struct Shape {
  std::int64_t k, b, v;
  double tau;
};

struct Options {
  double scale = 3.0;  // logits uniform in [-scale, scale]
  bool teacher = true;
  bool grad = true;
  bool misalign = false;  // logits start one element past an aligned address
  int null_tangent = -1;  // JVP: this student's tangent is null
};

template <class T>
struct HostCase {
  Shape s;
  std::vector<std::vector<T>> logits, tangents;  // K x (B, V)
  std::vector<T> qt, lqt;                        // (B, V)
  std::vector<std::int64_t> labels;              // (B)
  std::vector<T> alpha, beta;                    // (K, B)
};

// Row 0 of every student has alpha = 0, row 1 beta = 0, row 2 both (when B > 3); a few teacher
// probabilities are exactly 0 with log -inf, as a saturated teacher softmax gives.
template <class T>
HostCase<T> make_case(const Shape& s, const Options& o, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-o.scale, o.scale), w(0.1, 1.5), t(-1.0, 1.0);
  HostCase<T> c;
  c.s = s;
  const std::int64_t n = s.b * s.v;
  for (std::int64_t k = 0; k < s.k; ++k) {
    std::vector<T> z(n), zt(n);
    for (std::int64_t i = 0; i < n; ++i) {
      z[i] = static_cast<T>(u(rng));
      zt[i] = static_cast<T>(t(rng));
    }
    c.logits.push_back(z);
    c.tangents.push_back(zt);
  }
  c.qt.resize(n);
  c.lqt.resize(n);
  for (std::int64_t i = 0; i < s.b; ++i) {
    std::vector<double> zl(s.v);
    double mx = -std::numeric_limits<double>::infinity();
    for (auto& x : zl) {
      x = u(rng);
      mx = std::max(mx, x);
    }
    double sum = 0.0;
    for (double x : zl)
      sum += std::exp(x - mx);
    for (std::int64_t j = 0; j < s.v; ++j) {
      const double lp = zl[j] - mx - std::log(sum);
      c.qt[i * s.v + j] = static_cast<T>(std::exp(lp));
      c.lqt[i * s.v + j] = static_cast<T>(lp);
    }
    if (s.v > 4 && i % 2 == 0) {
      c.qt[i * s.v + 1] = T(0);
      c.lqt[i * s.v + 1] = -std::numeric_limits<T>::infinity();
    }
  }
  for (std::int64_t i = 0; i < s.b; ++i)
    c.labels.push_back(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(s.v)));
  for (std::int64_t r = 0; r < s.k * s.b; ++r) {
    c.alpha.push_back(static_cast<T>(w(rng)));
    c.beta.push_back(static_cast<T>(w(rng)));
  }
  for (std::int64_t k = 0; k < s.k; ++k) {
    if (s.b > 1) c.alpha[k * s.b + 0] = T(0);
    if (s.b > 2) c.beta[k * s.b + 1] = T(0);
    if (s.b > 3) c.alpha[k * s.b + 2] = c.beta[k * s.b + 2] = T(0);
  }
  return c;
}

// Device copies of a case; misaligned logits live one element into their buffer.
template <class T>
struct DeviceCase {
  DeviceCase(const HostCase<T>& c, const Options& o, const Stream& st)
      : qt(c.qt, st), lqt(c.lqt, st), labels(c.labels, st), alpha(c.alpha, st), beta(c.beta, st) {
    for (std::int64_t k = 0; k < c.s.k; ++k) {
      std::vector<T> z = c.logits[k], zt = c.tangents[k];
      if (o.misalign) {
        z.insert(z.begin(), T(0));
        zt.insert(zt.begin(), T(0));
      }
      logits.emplace_back(z, st);
      tangents.emplace_back(zt, st);
      logit_ptrs.push_back(logits.back().get() + (o.misalign ? 1 : 0));
      tangent_ptrs.push_back(k == o.null_tangent ? nullptr
                                                 : tangents.back().get() + (o.misalign ? 1 : 0));
    }
  }
  std::vector<DeviceArray<T>> logits, tangents;
  std::vector<const T*> logit_ptrs, tangent_ptrs;
  DeviceArray<T> qt, lqt;
  DeviceArray<std::int64_t> labels;
  DeviceArray<T> alpha, beta;
};

// A zero-filled workspace, as the launcher's contract requires before first use.
mcd::kernels::cuda::DeviceBuffer make_workspace(std::int64_t k, std::int64_t b, const Stream& st) {
  const std::size_t bytes = mcd::kernels::cuda::distill_loss_workspace_bytes(k, b);
  mcd::kernels::cuda::DeviceBuffer ws(st.device(), bytes, st.get());
  MCD_CUDA_CHECK(cudaMemsetAsync(ws.data(), 0, bytes, st.get()));
  return ws;
}

template <class T>
void check_forward(const Shape& s, const Options& o, std::uint64_t seed) {
  const std::string name = "forward K=" + std::to_string(s.k) + " B=" + std::to_string(s.b) +
                           " V=" + std::to_string(s.v) + " tau=" + std::to_string(s.tau) +
                           (sizeof(T) == 4 ? " float32" : " float64");
  INFO(name << (o.teacher ? "" : " no-teacher") << (o.grad ? "" : " no-grad")
            << (o.misalign ? " misaligned" : "") << " scale " << o.scale);
  const HostCase<T> c = make_case<T>(s, o, seed);
  const std::int64_t kb = s.k * s.b, kbv = kb * s.v;

  std::vector<const T*> host_logits;
  for (auto& z : c.logits)
    host_logits.push_back(z.data());
  std::vector<T> ce(kb), kl(kb), loss(s.k), grad(o.grad ? kbv : 0);
  mcd::kernels::cpu::distill_loss_forward_cpu<T>(
      s.k, s.b, s.v, host_logits.data(), o.teacher ? c.qt.data() : nullptr,
      o.teacher ? c.lqt.data() : nullptr, c.labels.data(), c.alpha.data(), c.beta.data(), s.tau,
      ce.data(), kl.data(), loss.data(), o.grad ? grad.data() : nullptr);

  Stream st(0);
  DeviceCase<T> d(c, o, st);
  DeviceArray<T> dce(kb, st), dkl(kb, st), dloss(s.k, st), dgrad(o.grad ? kbv : 0, st);
  auto ws = make_workspace(s.k, s.b, st);
  std::vector<T> first_loss;
  for (int run = 0; run < 2; ++run) {  // twice: the workspace must come back zeroed
    mcd::kernels::cuda::distill_loss_forward_cuda<T>(
        s.k, s.b, s.v, d.logit_ptrs.data(), o.teacher ? d.qt.get() : nullptr,
        o.teacher ? d.lqt.get() : nullptr, d.labels.get(), d.alpha.get(), d.beta.get(), s.tau,
        dce.get(), dkl.get(), dloss.get(), o.grad ? dgrad.get() : nullptr, ws.data(), st.get());
    st.synchronize();
    const std::vector<T> l = dloss.download(st);
    if (run == 0) {
      first_loss = l;
    } else {
      CHECK(mcd::testing::bitwise_equal(l, first_loss));  // deterministic
    }
  }
  // Per-sample terms and losses: errors relative to max(|values|, 1), as they are set by the
  // log-sum-exp terms of order 1 even where a row's KL is near 0; gradients: normwise.
  const double tol = parity_rtol<T>();
  require_close(name + " ce", dce.download(st), ce, tol, 1.0);
  require_close(name + " kl", dkl.download(st), kl, tol, 1.0);
  require_close(name + " loss", dloss.download(st), loss, tol, 1.0);
  if (o.grad) require_close(name + " grad", dgrad.download(st), grad, tol);
}

template <class T>
void check_jvp(const Shape& s, const Options& o, std::uint64_t seed) {
  const std::string name = "jvp K=" + std::to_string(s.k) + " B=" + std::to_string(s.b) +
                           " V=" + std::to_string(s.v) + (sizeof(T) == 4 ? " float32" : " float64");
  INFO(name << (o.teacher ? "" : " no-teacher") << " null tangent " << o.null_tangent);
  const HostCase<T> c = make_case<T>(s, o, seed);
  const std::int64_t kb = s.k * s.b;
  std::vector<const T*> host_logits, host_tangents;
  for (std::int64_t k = 0; k < s.k; ++k) {
    host_logits.push_back(c.logits[k].data());
    host_tangents.push_back(k == o.null_tangent ? nullptr : c.tangents[k].data());
  }
  std::vector<T> ce_t(kb), kl_t(kb), loss_t(s.k);
  mcd::kernels::cpu::distill_loss_jvp_cpu<T>(
      s.k, s.b, s.v, host_logits.data(), host_tangents.data(), o.teacher ? c.qt.data() : nullptr,
      c.labels.data(), c.alpha.data(), c.beta.data(), s.tau, ce_t.data(), kl_t.data(),
      loss_t.data());

  Stream st(0);
  DeviceCase<T> d(c, o, st);
  DeviceArray<T> dce(kb, st), dkl(kb, st), dloss(s.k, st);
  auto ws = make_workspace(s.k, s.b, st);
  mcd::kernels::cuda::distill_loss_jvp_cuda<T>(
      s.k, s.b, s.v, d.logit_ptrs.data(), d.tangent_ptrs.data(), o.teacher ? d.qt.get() : nullptr,
      d.labels.get(), d.alpha.get(), d.beta.get(), s.tau, dce.get(), dkl.get(), dloss.get(),
      ws.data(), st.get());
  st.synchronize();
  const double tol = parity_rtol<T>();
  require_close(name + " ce_t", dce.download(st), ce_t, tol, 1.0);
  require_close(name + " kl_t", dkl.download(st), kl_t, tol, 1.0);
  require_close(name + " loss_t", dloss.download(st), loss_t, tol, 1.0);
}

// Warp path (V <= 1024) and block path, with V divisible by 4 (packs) or not (scalars).
const std::vector<Shape> kShapes = {
    {1, 1, 2, 1.0},       {3, 3, 10, 2.5},    {5, 400, 100, 4.0}, {5, 400, 100, 2.0},
    {3, 1000, 1000, 2.5}, {1, 3, 32768, 2.0}, {3, 1, 32768, 4.0}, {2, 7, 4099, 1.0},
    {1, 5, 1025, 2.5},    {4, 9, 1024, 2.0},  {16, 3, 64, 2.0},   {1, 1000, 10, 1.0},
};

}  // namespace

TEST_CASE("CUDA distill loss forward matches the CPU kernel", "[gpu][distill_loss]") {
  std::uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    check_forward<float>(s, {}, seed);
    check_forward<double>(s, {}, seed);
    ++seed;
  }
}

TEST_CASE("CUDA distill loss: extreme logits, no teacher, no grad, misaligned",
          "[gpu][distill_loss]") {
  for (const Shape& s :
       {Shape{5, 400, 100, 2.0}, Shape{1, 3, 32768, 4.0}, Shape{2, 5, 3000, 1.0}}) {
    Options extreme;
    extreme.scale = 1e4;
    check_forward<float>(s, extreme, 11);
    check_forward<double>(s, extreme, 11);
    Options none;
    none.teacher = false;
    check_forward<float>(s, none, 12);
    check_forward<double>(s, none, 12);
    Options values;
    values.grad = false;
    check_forward<float>(s, values, 13);
    Options mis;
    mis.misalign = true;
    check_forward<float>(s, mis, 14);
    check_forward<double>(s, mis, 14);
  }
}

TEST_CASE("CUDA distill loss JVP matches the CPU kernel", "[gpu][distill_loss]") {
  std::uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    check_jvp<float>(s, {}, seed);
    check_jvp<double>(s, {}, seed);
    ++seed;
  }
  Options null_tangent;
  null_tangent.null_tangent = 1;
  check_jvp<float>({3, 400, 100, 2.0}, null_tangent, 7);
  check_jvp<double>({3, 5, 4096, 2.0}, null_tangent, 7);
  Options none;
  none.teacher = false;
  check_jvp<float>({5, 400, 100, 2.0}, none, 8);
  Options extreme;
  extreme.scale = 1e4;
  check_jvp<double>({2, 4, 32768, 2.5}, extreme, 9);
  Options mis;
  mis.misalign = true;
  check_jvp<float>({3, 6, 2048, 2.0}, mis, 10);
}

TEST_CASE("CUDA distill loss rejects bad arguments with the op's name", "[gpu][distill_loss]") {
  Stream st(0);
  auto ws = make_workspace(17, 1, st);
  std::vector<const float*> logits(17, nullptr);
  try {
    mcd::kernels::cuda::distill_loss_forward_cuda<float>(
        17, 1, 10, logits.data(), nullptr, nullptr, nullptr, nullptr, nullptr, 2.0, nullptr,
        nullptr, nullptr, nullptr, ws.data(), st.get());
    FAIL("no exception");
  } catch (const std::exception& e) {
    CHECK_THAT(e.what(),
               Catch::Contains("distill_loss_forward_cuda") && Catch::Contains("17 students"));
  }
}
