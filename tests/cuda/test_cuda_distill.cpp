// The fused distillation loss through distill/'s entry points on CUDA tensors against the
// same calls on the CPU: fused_distill_loss (one teacher, a two-teacher mixture, no teacher),
// fused_distill_loss_jvp, and distill_loss's VJP (logits, alpha, beta) and JVP. Outputs must
// stay on the device. float32 at 1e-5 and float64 at 1e-12 (normwise, as every parity test).
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/kernels/cuda/backend.h>

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
