// The fused distillation loss through distill/'s entry points on CUDA tensors against the
// same calls on the CPU: make_mixture_targets (the teacher mixture's kernel), fused_distill_loss
// (one teacher, a two-teacher mixture, no teacher), fused_distill_loss_jvp, and distill_loss's
// VJP (logits, alpha, beta) and JVP. Outputs must stay on the device. float32 at 1e-5 and float64
// at 1e-12 (normwise, as every parity test). Then every kernel variant of the launchers
// (distill_loss.h: general, row_per_warp, row_split, row_split_log_prob, automatic) against the CPU
// kernel on the shapes each takes.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/kernels/cpu/distill_loss.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/distill_loss.h>

#include "cuda/test_cuda_nn_parity.h"

using namespace mcd;
using mcd::testing::parity_rtol;
using mcd::testing::require_tensor_close;
namespace kcu = mcd::kernels::cuda;

namespace {

constexpr std::int64_t kK = 3, kB = 33, kV = 10;
constexpr double kTau = 2.0;

struct Inputs {
  std::vector<Tensor> logits;
  std::vector<Tensor> teachers;
  Tensor labels, alpha, beta;

  Inputs to(Device d) const {
    Inputs o;
    for (const Tensor& z : logits)
      o.logits.push_back(z.to(d));
    for (const Tensor& t : teachers)
      o.teachers.push_back(t.to(d));
    o.labels = labels.to(d);
    o.alpha = alpha.to(d);
    o.beta = beta.to(d);
    return o;
  }
};

Inputs make_inputs(Generator& gen, DType dt) {
  Inputs in;
  for (std::int64_t k = 0; k < kK; ++k)
    in.logits.push_back(Tensor::randn({kB, kV}, gen, dt));
  for (int j = 0; j < 2; ++j)
    in.teachers.push_back(Tensor::uniform({kB, kV}, gen, -4.0, 4.0, dt));
  std::vector<std::int64_t> y;
  for (std::int64_t i = 0; i < kB; ++i)
    y.push_back(static_cast<std::int64_t>(gen.below(kV)));
  in.labels = Tensor::from_vector(y, {kB});
  in.alpha = Tensor::uniform({kK, kB}, gen, 0.0, 1.0, dt);
  in.beta = Tensor::uniform({kK, kB}, gen, 0.0, 1.0, dt);
  return in;
}

enum class Guide { One, Mixture, None };

distill::TeacherTargets targets(const Inputs& in, Guide g) {
  switch (g) {
    case Guide::One:
      return distill::make_teacher_targets(in.teachers[0], kTau);
    case Guide::Mixture:
      return distill::make_mixture_targets(in.teachers, kTau);
    case Guide::None:
      return distill::no_teacher(kTau);
  }
  return {};
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA teacher mixture matches the CPU", "[cuda][distill]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  const DType dt = sizeof(TestType) == 4 ? DType::Float32 : DType::Float64;
  const double tol = parity_rtol<TestType>();
  Generator gen(37);
  // 2 to 5 guides; rows longer than a block's stride; logits spread over +-2000 so that (at tau
  // 2) some guides' probabilities underflow to 0 in double where others' do not, and some
  // columns' underflow for every guide (the log-sum-exp, the skipped offset terms).
  struct Case {
    int guides;
    std::int64_t b, v;
    double spread;
  };
  for (const Case& c : {Case{2, 33, 10, 4.0}, Case{3, 7, 300, 4.0}, Case{5, 5, 1000, 8.0},
                        Case{3, 9, 100, 2000.0}}) {
    INFO(c.guides << " guides, B " << c.b << ", V " << c.v << ", logits within +-" << c.spread);
    std::vector<Tensor> host, device;
    for (int j = 0; j < c.guides; ++j) {
      host.push_back(Tensor::uniform({c.b, c.v}, gen, -c.spread, c.spread, dt));
      device.push_back(host.back().to(Device::cuda()));
    }
    const distill::TeacherTargets tc = distill::make_mixture_targets(host, kTau);
    const distill::TeacherTargets td = distill::make_mixture_targets(device, kTau);
    CHECK(td.guides == c.guides);
    require_tensor_close("prob", td.prob, tc.prob, tol);
    require_tensor_close("log_prob", td.log_prob, tc.log_prob, tol);
    require_tensor_close("kl_offset", td.kl_offset, tc.kl_offset, tol);
  }
}

TEMPLATE_TEST_CASE("CUDA fused distillation loss matches the CPU", "[cuda][distill]", float,
                   double) {
  REQUIRE(kcu::install_cuda_backend());
  const DType dt = sizeof(TestType) == 4 ? DType::Float32 : DType::Float64;
  const double tol = parity_rtol<TestType>();
  Generator gen(31);
  for (const Guide guide : {Guide::One, Guide::Mixture, Guide::None}) {
    const std::string name = guide == Guide::One       ? "one teacher"
                             : guide == Guide::Mixture ? "teacher mixture"
                                                       : "no teacher";
    Inputs hc = make_inputs(gen, dt);
    if (guide == Guide::None) hc.beta = Tensor::zeros({kK, kB}, dt);
    const Inputs hd = hc.to(Device::cuda());
    const distill::TeacherTargets tc = targets(hc, guide), td = targets(hd, guide);
    require_tensor_close(name + " targets prob", td.prob, tc.prob, tol);
    require_tensor_close(name + " targets kl_offset", td.kl_offset, tc.kl_offset, tol);

    // ---- fused forward
    const auto fc = distill::fused_distill_loss(hc.logits, tc, hc.labels, hc.alpha, hc.beta);
    const auto fd = distill::fused_distill_loss(hd.logits, td, hd.labels, hd.alpha, hd.beta);
    require_tensor_close(name + " ce", fd.ce, fc.ce, tol);
    require_tensor_close(name + " kl", fd.kl, fc.kl, tol);
    require_tensor_close(name + " loss", fd.loss, fc.loss, tol);
    require_tensor_close(name + " grad_logits", fd.grad_logits, fc.grad_logits, tol);

    // ---- per-sample JVP (student 1 without a tangent)
    std::vector<Tensor> tc_t, td_t;
    for (std::int64_t k = 0; k < kK; ++k) {
      const Tensor t = k == 1 ? Tensor() : Tensor::randn({kB, kV}, gen, dt);
      tc_t.push_back(t);
      td_t.push_back(t.defined() ? t.to(Device::cuda()) : Tensor());
    }
    const auto jc =
        distill::fused_distill_loss_jvp(hc.logits, tc, hc.labels, hc.alpha, hc.beta, tc_t);
    const auto jd =
        distill::fused_distill_loss_jvp(hd.logits, td, hd.labels, hd.alpha, hd.beta, td_t);
    require_tensor_close(name + " ce_t", jd.ce_t, jc.ce_t, tol);
    require_tensor_close(name + " kl_t", jd.kl_t, jc.kl_t, tol);
    require_tensor_close(name + " loss_t", jd.loss_t, jc.loss_t, tol);

    // ---- distill_loss: VJP with respect to logits, alpha, beta, and JVP
    std::vector<Tensor> in_host = hc.logits;
    in_host.push_back(hc.alpha);
    in_host.push_back(hc.beta);
    const auto f = [&](const std::vector<Tensor>& v) {
      const bool on_cuda = !v[0].device().is_cpu();
      const std::vector<Tensor> z(v.begin(), v.begin() + kK);
      return distill::distill_loss(z, on_cuda ? td : tc, on_cuda ? hd.labels : hc.labels, v[kK],
                                   v[kK + 1]);
    };
    // Without a teacher beta must stay 0, so neither its tangent nor its cotangent is drawn.
    mcd::testing::check_op_parity(name + " distill_loss", f, in_host, tol, gen,
                                  guide != Guide::None);
  }
}

// ---- Kernel variants, through the launchers. Outputs are NaN-poisoned (DeviceArray); every
// launch runs twice on one workspace, which must come back zeroed (same bits). Per-sample terms
// and losses are compared relative to max(|values|, 1), as in test_cuda_kernels.cpp.

namespace {

namespace kcpu = mcd::kernels::cpu;
using kcu::FusedLossKernel;
using mcd::testing::DeviceArray;

struct RowShape {
  std::int64_t k, b, v;
  double tau;
};

enum class Teacher { One, Mixture, None };

struct RowOptions {
  Teacher teacher = Teacher::One;
  bool grad = true;
  bool misalign = false;  // logits and tangents start one element past an aligned address
  double scale = 3.0;     // logits uniform in [-scale, scale]
};

template <class T>
struct RowCase {
  std::vector<std::vector<T>> z, zt;  // K x (B, V)
  std::vector<T> qt, lqt;             // (B, V); empty without a teacher
  std::vector<std::int64_t> labels;   // (B)
  std::vector<T> alpha, beta;         // (K, B)
};

// Teacher: one softmax with a zero probability (log -inf) in every other row, or the mixture
// of two (log of the mean, as make_mixture_targets). alpha = 0 in row 0, beta = 0 in row 1, both
// in row 2 of every student.
template <class T>
RowCase<T> make_row_case(const RowShape& s, const RowOptions& o, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-o.scale, o.scale), w(0.1, 1.5), t(-1.0, 1.0);
  RowCase<T> c;
  const std::int64_t n = s.b * s.v;
  for (std::int64_t k = 0; k < s.k; ++k) {
    std::vector<T> z(n), zt(n);
    for (std::int64_t i = 0; i < n; ++i) {
      z[i] = static_cast<T>(u(rng));
      zt[i] = static_cast<T>(t(rng));
    }
    c.z.push_back(z);
    c.zt.push_back(zt);
  }
  if (o.teacher != Teacher::None) {
    const int guides = o.teacher == Teacher::Mixture ? 2 : 1;
    c.qt.resize(n);
    c.lqt.resize(n);
    std::vector<double> lp(static_cast<std::size_t>(guides * s.v));
    for (std::int64_t i = 0; i < s.b; ++i) {
      for (int g = 0; g < guides; ++g) {
        double* row = lp.data() + g * s.v;
        double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (std::int64_t j = 0; j < s.v; ++j)
          mx = std::max(mx, row[j] = u(rng));
        for (std::int64_t j = 0; j < s.v; ++j)
          sum += std::exp(row[j] - mx);
        for (std::int64_t j = 0; j < s.v; ++j)
          row[j] -= mx + std::log(sum);
      }
      for (std::int64_t j = 0; j < s.v; ++j) {
        double l = lp[j];
        if (guides == 2) {
          const double a = lp[j], b = lp[s.v + j], top = std::max(a, b);
          l = top + std::log(std::exp(a - top) + std::exp(b - top)) - std::log(2.0);
        }
        c.qt[i * s.v + j] = static_cast<T>(std::exp(l));
        c.lqt[i * s.v + j] = static_cast<T>(l);
      }
      if (guides == 1 && s.v > 4 && i % 2 == 0) {
        c.qt[i * s.v + 1] = T(0);
        c.lqt[i * s.v + 1] = -std::numeric_limits<T>::infinity();
      }
    }
  }
  for (std::int64_t i = 0; i < s.b; ++i)
    c.labels.push_back(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(s.v)));
  for (std::int64_t r = 0; r < s.k * s.b; ++r) {
    c.alpha.push_back(static_cast<T>(w(rng)));
    c.beta.push_back(static_cast<T>(w(rng)));
  }
  for (std::int64_t k = 0; k < s.k; ++k) {
    if (s.b > 1) c.alpha[k * s.b] = T(0);
    if (s.b > 2) c.beta[k * s.b + 1] = T(0);
    if (s.b > 3) c.alpha[k * s.b + 2] = c.beta[k * s.b + 2] = T(0);
  }
  return c;
}

// Device copies: the K logits (and tangents, student 1's null when K > 1) and the rest.
template <class T>
struct DeviceRowCase {
  DeviceRowCase(const RowCase<T>& c, const RowOptions& o, const kcu::Stream& st)
      : qt(c.qt, st), lqt(c.lqt, st), labels(c.labels, st), alpha(c.alpha, st), beta(c.beta, st) {
    const std::size_t shift = o.misalign ? 1 : 0;
    for (std::size_t k = 0; k < c.z.size(); ++k) {
      std::vector<T> z = c.z[k], zt = c.zt[k];
      z.insert(z.begin(), shift, T(0));
      zt.insert(zt.begin(), shift, T(0));
      z_store.emplace_back(z, st);
      zt_store.emplace_back(zt, st);
      z_ptrs.push_back(z_store.back().get() + shift);
      zt_ptrs.push_back(k == 1 ? nullptr : zt_store.back().get() + shift);
    }
  }
  const T* prob() const { return qt.size() > 0 ? qt.get() : nullptr; }
  const T* log_prob() const { return lqt.size() > 0 ? lqt.get() : nullptr; }
  std::vector<DeviceArray<T>> z_store, zt_store;
  std::vector<const T*> z_ptrs, zt_ptrs;
  DeviceArray<T> qt, lqt;
  DeviceArray<std::int64_t> labels;
  DeviceArray<T> alpha, beta;
};

kcu::DeviceBuffer zeroed_workspace(std::int64_t k, std::int64_t b, const kcu::Stream& st) {
  const std::size_t bytes = kcu::distill_loss_workspace_bytes(k, b);
  kcu::DeviceBuffer ws(st.device(), bytes, st.get());
  MCD_CUDA_CHECK(cudaMemsetAsync(ws.data(), 0, bytes, st.get()));
  return ws;
}

std::string describe(FusedLossKernel kernel, const RowShape& s, const RowOptions& o, bool dbl) {
  return std::string(kcu::fused_loss_kernel_name(kernel)) + " K=" + std::to_string(s.k) +
         " B=" + std::to_string(s.b) + " V=" + std::to_string(s.v) +
         " tau=" + std::to_string(s.tau) + (dbl ? " float64" : " float32") +
         (o.teacher == Teacher::One       ? " one teacher"
          : o.teacher == Teacher::Mixture ? " mixture"
                                          : " no teacher") +
         (o.grad ? "" : " no grad") + (o.misalign ? " misaligned" : "") + " scale " +
         std::to_string(o.scale);
}

// Runs `launch` twice: the second run's losses must equal the first's bit for bit (the same
// inputs give the same reduction order, launch after launch).
template <class T, class Launch>
void launch_twice_same_bits(const DeviceArray<T>& loss, const kcu::Stream& st, Launch&& launch) {
  std::vector<T> first;
  for (int run = 0; run < 2; ++run) {
    launch();
    st.synchronize();
    if (run == 0)
      first = loss.download(st);
    else
      CHECK(mcd::testing::bitwise_equal(loss.download(st), first));
  }
}

template <class T>
void check_variant_forward(FusedLossKernel kernel, const RowShape& s, const RowOptions& o,
                           std::uint64_t seed) {
  const std::string name = "forward " + describe(kernel, s, o, sizeof(T) == 8);
  INFO(name);
  const RowCase<T> c = make_row_case<T>(s, o, seed);
  const std::int64_t kb = s.k * s.b;
  const bool teacher = o.teacher != Teacher::None;
  std::vector<const T*> hz;
  for (const auto& z : c.z)
    hz.push_back(z.data());
  std::vector<T> ce(kb), kl(kb), loss(s.k), grad(o.grad ? kb * s.v : 0);
  kcpu::distill_loss_forward_cpu<T>(s.k, s.b, s.v, hz.data(), teacher ? c.qt.data() : nullptr,
                                    teacher ? c.lqt.data() : nullptr, c.labels.data(),
                                    c.alpha.data(), c.beta.data(), s.tau, ce.data(), kl.data(),
                                    loss.data(), o.grad ? grad.data() : nullptr);
  const kcu::Stream st(0);
  const DeviceRowCase<T> d(c, o, st);
  DeviceArray<T> dce(kb, st), dkl(kb, st), dloss(s.k, st), dgrad(o.grad ? kb * s.v : 0, st);
  auto ws = zeroed_workspace(s.k, s.b, st);
  launch_twice_same_bits(dloss, st, [&] {
    kcu::distill_loss_forward_cuda<T>(s.k, s.b, s.v, d.z_ptrs.data(), d.prob(), d.log_prob(),
                                      d.labels.get(), d.alpha.get(), d.beta.get(), s.tau, dce.get(),
                                      dkl.get(), dloss.get(), o.grad ? dgrad.get() : nullptr,
                                      ws.data(), st.get(), kernel);
  });
  const double tol = parity_rtol<T>();
  mcd::testing::require_close(name + " ce", dce.download(st), ce, tol, 1.0);
  mcd::testing::require_close(name + " kl", dkl.download(st), kl, tol, 1.0);
  mcd::testing::require_close(name + " loss", dloss.download(st), loss, tol, 1.0);
  if (o.grad) mcd::testing::require_close(name + " grad", dgrad.download(st), grad, tol);
}

template <class T>
void check_variant_jvp(FusedLossKernel kernel, const RowShape& s, const RowOptions& o,
                       std::uint64_t seed) {
  const std::string name = "jvp " + describe(kernel, s, o, sizeof(T) == 8);
  INFO(name);
  const RowCase<T> c = make_row_case<T>(s, o, seed);
  const std::int64_t kb = s.k * s.b;
  const bool teacher = o.teacher != Teacher::None;
  std::vector<const T*> hz, hzt;
  for (std::int64_t k = 0; k < s.k; ++k) {
    hz.push_back(c.z[k].data());
    hzt.push_back(k == 1 ? nullptr : c.zt[k].data());
  }
  std::vector<T> ce_t(kb), kl_t(kb), loss_t(s.k);
  kcpu::distill_loss_jvp_cpu<T>(s.k, s.b, s.v, hz.data(), hzt.data(),
                                teacher ? c.qt.data() : nullptr, c.labels.data(), c.alpha.data(),
                                c.beta.data(), s.tau, ce_t.data(), kl_t.data(), loss_t.data());
  const kcu::Stream st(0);
  const DeviceRowCase<T> d(c, o, st);
  DeviceArray<T> dce(kb, st), dkl(kb, st), dloss(s.k, st);
  auto ws = zeroed_workspace(s.k, s.b, st);
  launch_twice_same_bits(dloss, st, [&] {
    kcu::distill_loss_jvp_cuda<T>(s.k, s.b, s.v, d.z_ptrs.data(), d.zt_ptrs.data(), d.prob(),
                                  d.labels.get(), d.alpha.get(), d.beta.get(), s.tau, dce.get(),
                                  dkl.get(), dloss.get(), ws.data(), st.get(), kernel);
  });
  const double tol = parity_rtol<T>();
  mcd::testing::require_close(name + " ce_t", dce.download(st), ce_t, tol, 1.0);
  mcd::testing::require_close(name + " kl_t", dkl.download(st), kl_t, tol, 1.0);
  mcd::testing::require_close(name + " loss_t", dloss.download(st), loss_t, tol, 1.0);
}

std::vector<FusedLossKernel> all_kernels() {
  std::vector<FusedLossKernel> out = {FusedLossKernel::automatic};
  for (const FusedLossKernel k : kcu::kFusedLossKernels)
    out.push_back(k);
  return out;
}

// V = 1 and 3 (less than a pack), 100 and 1000 (the warp path), 1025 and 4099 (one block, scalar
// loads), 32768 (a 4-block cluster, packs), 32771 (8 blocks, scalars), 65536 (8 blocks; 64 KiB
// slices in float64), K = 1, 2, 3, 5 and 16, and more samples than the warp path's grid.
const std::vector<RowShape> kRowShapes = {
    {1, 1, 1, 2.0},
    {5, 3, 3, 2.5},
    {5, 400, 100, 2.0},
    {1, 13, 100, 4.0},
    {2, 9, 1000, 1.0},
    {1, 5, 1025, 2.5},
    {3, 2, 4099, 2.0},
    {1, 3, 32768, 2.0},
    {2, 2, 32771, 4.0},
    {1, 2, 65536, 2.0},
    {5, 1100, 3, 2.0},
    {16, 3, 64, 2.0},
    {1, 2000, 200, 2.0},
    // Dynamic shared memory just under 48 KiB, static included over it (the opt-in limit):
    // row_split at V = 98304 (float32) and 49152 (float64), the general kernel's cached row at
    // V = 12288 (float32) and 6144 (float64).
    {1, 2, 98304, 2.0},
    {1, 2, 49152, 2.0},
    {1, 2, 12288, 2.0},
    {1, 2, 6144, 2.0},
};

template <class T>
void check_every_variant(const std::vector<RowShape>& shapes, const std::vector<RowOptions>& opts,
                         bool jvp) {
  std::uint64_t seed = 300;
  for (const FusedLossKernel kernel : all_kernels())
    for (const RowShape& s : shapes) {
      ++seed;
      if (!kcu::fused_loss_kernel_applies(kernel, s.v, sizeof(T))) continue;
      for (const RowOptions& o : opts)
        check_variant_forward<T>(kernel, s, o, seed);
      if (jvp) check_variant_jvp<T>(kernel, s, opts.front(), seed);
    }
}

RowOptions with_teacher(Teacher t) {
  RowOptions o;
  o.teacher = t;
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA fused loss: every kernel variant matches the CPU kernel",
                   "[gpu][distill_loss_variants]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  check_every_variant<TestType>(
      kRowShapes,
      {with_teacher(Teacher::One), with_teacher(Teacher::Mixture), with_teacher(Teacher::None)},
      true);
}

TEMPLATE_TEST_CASE("CUDA fused loss variants: extreme logits, no grad, misaligned",
                   "[gpu][distill_loss_variants]", float, double) {
  REQUIRE(kcu::install_cuda_backend());
  RowOptions extreme, values, mis;
  extreme.scale = 1e4;
  values.grad = false;
  mis.misalign = true;
  check_every_variant<TestType>(
      {{5, 40, 100, 2.0}, {1, 3, 1000, 2.0}, {1, 3, 32768, 4.0}, {2, 5, 3000, 1.0}},
      {extreme, values, mis}, false);
}

// Small enough for compute-sanitizer (check.sh's memcheck takes [distill_loss]): every variant's
// forward and JVP on the warp path, a one-block row with scalar loads and a 4-block cluster.
TEST_CASE("CUDA fused loss variants under the sanitizers", "[gpu][distill_loss]") {
  REQUIRE(kcu::install_cuda_backend());
  check_every_variant<float>({{5, 40, 100, 2.0}, {1, 3, 1025, 2.0}, {1, 2, 32768, 2.0}},
                             {with_teacher(Teacher::One)}, true);
}

TEST_CASE("CUDA fused loss: automatic selection, and a forced variant that does not apply",
          "[gpu][distill_loss]") {
  REQUIRE(kcu::install_cuda_backend());
  CHECK(kcu::fused_loss_automatic_kernel(100, 4) == FusedLossKernel::row_per_warp);
  CHECK(kcu::fused_loss_automatic_kernel(1024, 4) == FusedLossKernel::row_per_warp);
  const bool clusters = kcu::fused_loss_kernel_applies(FusedLossKernel::row_split, 32768, 4);
  CHECK(kcu::fused_loss_automatic_kernel(512, 8) ==
        (clusters ? FusedLossKernel::row_split : FusedLossKernel::general));
  CHECK(kcu::fused_loss_automatic_kernel(32768, 4) ==
        (clusters ? FusedLossKernel::row_split : FusedLossKernel::general));
  const kcu::Stream st(0);
  const RowShape s{1, 2, 2000, 2.0};
  const RowOptions o;
  const RowCase<float> c = make_row_case<float>(s, o, 5);
  const DeviceRowCase<float> d(c, o, st);
  DeviceArray<float> ce(2, st), kl(2, st), loss(1, st);
  auto ws = zeroed_workspace(1, 2, st);
  REQUIRE_FALSE(kcu::fused_loss_kernel_applies(FusedLossKernel::row_per_warp, 2000, 4));
  try {
    kcu::distill_loss_forward_cuda<float>(1, 2, 2000, d.z_ptrs.data(), d.prob(), d.log_prob(),
                                          d.labels.get(), d.alpha.get(), d.beta.get(), 2.0,
                                          ce.get(), kl.get(), loss.get(), nullptr, ws.data(),
                                          st.get(), FusedLossKernel::row_per_warp);
    FAIL("no exception");
  } catch (const std::exception& e) {
    CHECK_THAT(e.what(), Catch::Contains("distill_loss_forward_cuda") &&
                             Catch::Contains("row_per_warp") && Catch::Contains("2000"));
  }
}
