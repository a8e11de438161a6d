// The engine's optimizers on CUDA parameters against the same optimizers on CPU copies: SGD
// (momentum, dampening, weight decay, Nesterov), Adam and AdamW over several steps with the
// same gradients, the SGD lookahead direction before and after the first momentum step, and
// state dicts saved from one side and loaded into the other. The device kernels replay the
// CPU arithmetic without fused multiply-adds, so everything must be bit-identical.
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/generator.h>
#include <mcd/engine/optim/adam.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/kernels/cuda/backend.h>

using namespace mcd;
namespace kcu = mcd::kernels::cuda;

namespace {

const std::vector<Shape> kShapes = {{1}, {3, 5}, {17, 3, 3, 3}, {16385}};

struct Pair {
  std::vector<Tensor> cpu, cuda;
};

// Parameters of dtype dt, or alternately float32 and float64 with `mixed`.
Pair make_params(Generator& gen, DType dt, bool mixed = false) {
  Pair p;
  for (const Shape& s : kShapes) {
    const DType d = mixed ? (p.cpu.size() % 2 == 0 ? DType::Float32 : DType::Float64) : dt;
    const Tensor t = Tensor::randn(s, gen, d);
    p.cpu.push_back(t.clone().set_requires_grad(true));
    p.cuda.push_back(t.to(Device::cuda()).detach().set_requires_grad(true));
  }
  return p;
}

// The same random gradient on both sides; the last parameter gets none on odd steps (a
// parameter without a gradient is skipped and keeps its state).
void set_grads(Pair& p, Generator& gen, int step) {
  for (std::size_t i = 0; i < p.cpu.size(); ++i) {
    p.cpu[i].zero_grad();
    p.cuda[i].zero_grad();
    if (i + 1 == p.cpu.size() && step % 2 == 1) continue;
    const Tensor g = Tensor::randn(p.cpu[i].shape(), gen, p.cpu[i].dtype());
    p.cpu[i].set_grad(g);
    p.cuda[i].set_grad(g.to(Device::cuda()));
  }
}

void require_same(const char* what, const Tensor& cuda, const Tensor& cpu) {
  INFO(what);
  REQUIRE(cuda.defined() == cpu.defined());
  if (!cpu.defined()) return;
  INFO("shape " << shape_str(cpu.shape()));
  REQUIRE(cuda.to(Device::cpu()).to_doubles() == cpu.to_doubles());
}

void require_same_params(const Pair& p) {
  for (std::size_t i = 0; i < p.cpu.size(); ++i)
    require_same("parameter", p.cuda[i], p.cpu[i]);
}

}  // namespace

TEST_CASE("CUDA Sgd steps and lookahead directions equal the CPU's", "[cuda][optim_device]") {
  REQUIRE(kcu::install_cuda_backend());
  for (const DType dt : {DType::Float32, DType::Float64})
    for (const bool nesterov : {false, true}) {
      Generator gen(21);
      Pair p = make_params(gen, dt);
      optim::SgdOptions o;
      o.lr = 0.05;
      o.momentum = 0.9;
      o.dampening = nesterov ? 0.0 : 0.1;
      o.weight_decay = 5e-4;
      o.nesterov = nesterov;
      optim::Sgd cpu(p.cpu, o), cuda(p.cuda, o);
      for (int step = 0; step < 4; ++step) {
        set_grads(p, gen, step);
        for (std::size_t i = 0; i < p.cpu.size(); ++i) {
          require_same("lookahead direction", cuda.lookahead_direction(i),
                       cpu.lookahead_direction(i));
          const Tensor g = Tensor::randn(p.cpu[i].shape(), gen, dt);
          require_same("lookahead direction (explicit gradient)",
                       cuda.lookahead_direction(i, g.to(Device::cuda())),
                       cpu.lookahead_direction(i, g));
        }
        cpu.step();
        cuda.step();
        require_same_params(p);
        for (std::size_t i = 0; i < p.cpu.size(); ++i)
          require_same("momentum buffer", cuda.momentum_buffer(i), cpu.momentum_buffer(i));
      }
      // State dicts are host tensors and move between the two sides.
      const StateDict s = cuda.state_dict();
      for (const auto& [key, t] : s)
        REQUIRE(t.device().is_cpu());
      optim::Sgd cpu2(p.cpu, o);
      cpu2.load_state_dict(s);
      optim::Sgd cuda2(p.cuda, o);
      cuda2.load_state_dict(cpu.state_dict());
      set_grads(p, gen, 0);
      cpu2.step();
      cuda2.step();
      require_same_params(p);
    }
}

TEST_CASE("CUDA Adam and AdamW steps equal the CPU's", "[cuda][optim_device]") {
  REQUIRE(kcu::install_cuda_backend());
  for (const DType dt : {DType::Float32, DType::Float64})
    for (const bool decoupled : {false, true}) {
      Generator gen(22);
      Pair p = make_params(gen, dt);
      std::unique_ptr<optim::Adam> cpu, cuda;
      if (decoupled) {
        optim::AdamWOptions o;
        o.lr = 1e-2;
        cpu = std::make_unique<optim::AdamW>(p.cpu, o);
        cuda = std::make_unique<optim::AdamW>(p.cuda, o);
      } else {
        optim::AdamOptions o;
        o.lr = 1e-2;
        o.weight_decay = 1e-3;
        cpu = std::make_unique<optim::Adam>(p.cpu, o);
        cuda = std::make_unique<optim::Adam>(p.cuda, o);
      }
      for (int step = 0; step < 4; ++step) {  // odd steps skip the last parameter
        set_grads(p, gen, step);
        cpu->step();
        cuda->step();
        require_same_params(p);
        for (std::size_t i = 0; i < p.cpu.size(); ++i) {
          REQUIRE(cuda->step_count(i) == cpu->step_count(i));
          require_same("exp_avg", cuda->exp_avg(i), cpu->exp_avg(i));
          require_same("exp_avg_sq", cuda->exp_avg_sq(i), cpu->exp_avg_sq(i));
        }
      }
      const StateDict s = cuda->state_dict();
      for (const auto& [key, t] : s)
        REQUIRE(t.device().is_cpu());
      cpu->load_state_dict(s);
      set_grads(p, gen, 0);
      cpu->step();
      cuda->step();
      require_same_params(p);
    }
}

TEST_CASE("CUDA optimizers step parameters of mixed float32 and float64 as the CPU does",
          "[cuda][optim_device]") {
  // One launch per dtype, each over that dtype's parameters.
  REQUIRE(kcu::install_cuda_backend());
  Generator gen(23);
  Pair p = make_params(gen, DType::Float32, /*mixed=*/true);
  REQUIRE(p.cpu[0].dtype() != p.cpu[1].dtype());
  optim::SgdOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;
  so.weight_decay = 5e-4;
  optim::Sgd sgd_cpu(p.cpu, so), sgd_cuda(p.cuda, so);
  optim::AdamWOptions ao;
  ao.lr = 1e-2;
  optim::AdamW adam_cpu(p.cpu, ao), adam_cuda(p.cuda, ao);
  for (int step = 0; step < 3; ++step) {
    set_grads(p, gen, step);
    sgd_cpu.step();
    sgd_cuda.step();
    require_same_params(p);
    set_grads(p, gen, step);
    adam_cpu.step();
    adam_cuda.step();
    require_same_params(p);
  }
}
