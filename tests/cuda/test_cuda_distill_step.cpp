// One whole MC-Distil iteration on CUDA against the same iteration on the CPU, in float32:
// two tiny students (resnet10_xxxs, resnet10_xxs) with SGD (momentum, weight decay,
// Nesterov), an "image+students" C-Net, one meta step (distill::meta_gradient, applied to the
// C-Net) and one normal step (C-Net weights, distill_loss, backward, SGD). The models are
// built once on the host and copied to the device with Module::to, the batches likewise.
//
// Tolerances (float32 through two steps; they are not bit-for-bit comparisons because cuDNN
// and cuBLAS sum in other orders than the CPU kernels, ~1e-6 relative per layer):
//  - the meta-gradient dM/dphi and dM/dw at 2e-3 normwise: each is a sum over samples of
//    inner products <v_k, grad ce_ki> from a forward-mode pass at theta and a backward pass at
//    theta', i.e. sums of O(1) float32 terms that partly cancel, so its relative error is
//    amplified well beyond the per-layer 1e-6;
//  - the parameters after the iteration at 1e-5 normwise (an update of lr times a gradient
//    that agrees to ~1e-4 moves each parameter by far less than that), and each parameter's
//    update (after - before) at 2e-3 normwise, the same reasoning as the meta-gradient;
//  - the BatchNorm running statistics at 1e-5 (means of activations).
// The C-Net takes its meta-gradient by plain SGD here: Adam's first step moves every
// parameter by about lr sign(g), which would turn rounding noise in near-zero gradient
// entries into lr-sized differences; the Adam kernel itself is checked bit for bit in
// test_cuda_optim_device.cpp.
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/distill/meta_step.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

#include "cuda/test_cuda_nn_parity.h"

using namespace mcd;
using mcd::testing::require_tensor_close;
namespace kcu = mcd::kernels::cuda;

namespace {

constexpr std::int64_t kClasses = 10, kSize = 16, kB = 16, kBv = 12;
constexpr double kTau = 4.0;

struct Side {
  std::vector<std::shared_ptr<nn::Module>> students;
  std::vector<std::unique_ptr<optim::Sgd>> opts;
  std::shared_ptr<nn::CNet> cnet;
  std::unique_ptr<optim::Sgd> cnet_opt;
  distill::LabelledBatch train, val;
  Tensor teacher_logits;
  // Results of the iteration, for comparison.
  distill::MetaStepResult meta;
  std::vector<std::vector<Tensor>> before;  // student parameters before the normal step
};

Tensor labels(std::int64_t n, Generator& gen) {
  std::vector<std::int64_t> y;
  for (std::int64_t i = 0; i < n; ++i)
    y.push_back(static_cast<std::int64_t>(gen.below(kClasses)));
  return Tensor::from_vector(y, {n});
}

// Both sides from one seed; `device` moves models and batches after construction.
Side make_side(Device device) {
  Generator gen(41);
  Side s;
  for (const char* arch : {"resnet10_xxxs", "resnet10_xxs"}) {
    auto m = nn::make_model(arch, {3, kClasses, kSize}, gen);
    m->to(device);
    m->train();
    s.students.push_back(m);
  }
  nn::CNetConfig c;
  c.input = nn::CNetInput::ImageStudents;
  c.head = nn::CNetHead::Sigmoid;
  c.num_students = 2;
  c.backbone = "resnet10_xxxs";
  c.image = {3, 0, kSize};
  s.cnet = std::make_shared<nn::CNet>(c, gen);
  s.cnet->to(device);
  s.cnet->train();
  for (std::size_t k = 0; k < s.students.size(); ++k) {
    optim::SgdOptions o;
    o.lr = 0.1 + 0.05 * static_cast<double>(k);
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    o.nesterov = true;
    s.opts.push_back(std::make_unique<optim::Sgd>(s.students[k]->parameters(), o));
  }
  optim::SgdOptions co;
  co.lr = 0.01;
  s.cnet_opt = std::make_unique<optim::Sgd>(s.cnet->parameters(), co);
  s.train = {Tensor::randn({kB, 3, kSize, kSize}, gen).to(device), labels(kB, gen).to(device)};
  s.val = {Tensor::randn({kBv, 3, kSize, kSize}, gen).to(device), labels(kBv, gen).to(device)};
  s.teacher_logits = mul(Tensor::randn({kB, kClasses}, gen), 3.0).to(device);
  return s;
}

void run_iteration(Side& s) {
  const distill::TeacherTargets teacher = distill::make_teacher_targets(s.teacher_logits, kTau);
  std::vector<distill::StudentRef> refs;
  for (std::size_t k = 0; k < s.students.size(); ++k)
    refs.push_back({s.students[k].get(), s.opts[k].get()});

  // ---- meta step: dM/dphi into the C-Net
  s.meta = distill::meta_gradient(refs, *s.cnet, s.train, teacher, s.val);
  const std::vector<Tensor> cp = s.cnet->parameters();
  for (std::size_t i = 0; i < cp.size(); ++i)
    Tensor(cp[i]).set_grad(s.meta.cnet_grads[i]);
  s.cnet_opt->step();
  s.cnet_opt->zero_grad();

  // ---- normal step with the updated C-Net's weights
  for (auto& m : s.students) {
    std::vector<Tensor> ps;
    for (const Tensor& p : m->parameters())  // a host copy (to() would alias a host tensor)
      ps.push_back(p.detach().to(Device::cpu()).clone());
    s.before.push_back(ps);
  }
  std::vector<Tensor> logits;
  for (auto& m : s.students)
    logits.push_back((*m)(s.train.images));
  Tensor w;
  {
    NoGradGuard no_grad;
    std::vector<Tensor> detached;
    for (const Tensor& z : logits)
      detached.push_back(z.detach());
    w = distill::cnet_weights(*s.cnet, s.train.images, detached, teacher, s.train.labels);
  }
  const Tensor loss = distill::distill_loss(logits, teacher, s.train.labels, distill::alpha_of(w),
                                            distill::beta_of(w));
  sum(loss).backward();
  for (auto& opt : s.opts) {
    opt->step();
    opt->zero_grad();
  }
}

}  // namespace

TEST_CASE("CUDA MC-Distil iteration matches the CPU one", "[cuda][distill_step]") {
  REQUIRE(kcu::install_cuda_backend());
  Side cpu = make_side(Device::cpu());
  Side gpu = make_side(Device::cuda());
  run_iteration(cpu);
  run_iteration(gpu);

  require_tensor_close("meta weights", gpu.meta.weights, cpu.meta.weights, 1e-5);
  require_tensor_close("student losses", gpu.meta.student_losses, cpu.meta.student_losses, 1e-5);
  REQUIRE(cpu.meta.meta_losses.to_doubles().size() == gpu.meta.meta_losses.to_doubles().size());
  mcd::testing::require_close<double>("meta losses", gpu.meta.meta_losses.to_doubles(),
                                      cpu.meta.meta_losses.to_doubles(), 1e-5);
  require_tensor_close("dM/dw", gpu.meta.weight_grad, cpu.meta.weight_grad, 2e-3);
  for (std::size_t i = 0; i < cpu.meta.cnet_grads.size(); ++i)
    require_tensor_close("dM/dphi " + std::to_string(i), gpu.meta.cnet_grads[i],
                         cpu.meta.cnet_grads[i], 2e-3);

  const auto cnet_c = cpu.cnet->named_parameters(), cnet_g = gpu.cnet->named_parameters();
  for (std::size_t i = 0; i < cnet_c.size(); ++i)
    require_tensor_close("C-Net " + cnet_c[i].first, cnet_g[i].second, cnet_c[i].second, 1e-5);
  for (std::size_t k = 0; k < cpu.students.size(); ++k) {
    const auto pc = cpu.students[k]->named_parameters(), pg = gpu.students[k]->named_parameters();
    REQUIRE(pc.size() == pg.size());
    for (std::size_t i = 0; i < pc.size(); ++i) {
      const std::string name = "student " + std::to_string(k) + " " + pc[i].first;
      require_tensor_close(name, pg[i].second, pc[i].second, 1e-5);
      const Tensor dc = sub(pc[i].second.detach(), cpu.before[k][i]);
      const Tensor dg = sub(pg[i].second.detach().to(Device::cpu()), gpu.before[k][i]);
      mcd::testing::require_close<double>(name + " update", dg.to_doubles(), dc.to_doubles(), 2e-3);
    }
    const auto bc = cpu.students[k]->named_buffers(), bg = gpu.students[k]->named_buffers();
    for (std::size_t i = 0; i < bc.size(); ++i)  // some buffers (counters) stay on the host
      mcd::testing::require_close<double>("student " + std::to_string(k) + " " + bc[i].first,
                                          mcd::testing::host_values(bg[i].second),
                                          bc[i].second.to_doubles(), 1e-5);
  }
}
