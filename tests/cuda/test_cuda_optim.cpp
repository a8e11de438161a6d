// Multi-tensor SGD and Adam/AdamW on the GPU against the CPU optimizers over several steps,
// on parameters of odd sizes (one element, a chunk plus one, ...). The kernels replay the CPU
// arithmetic without fused multiply-adds, so the parameters and the optimizer state are also
// reported when they are not bit-identical.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/optim/adam.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/tensor.h>
#include <mcd/kernels/cuda/multi_tensor_optim.h>

#include "cuda/cuda_test_support.h"

using mcd::Tensor;
using mcd::kernels::cuda::MultiTensorList;
using mcd::kernels::cuda::Stream;
using mcd::kernels::cuda::TensorSlots;
using mcd::testing::DeviceArray;
using mcd::testing::parity_rtol;
using mcd::testing::require_close;

namespace {

const std::vector<std::int64_t> kSizes = {1, 3, 17, 1000, 4099, MultiTensorList::kChunk + 1, 40000};
constexpr int kSteps = 4;

template <class T>
std::vector<T> random_vector(std::int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v)
    x = static_cast<T>(u(rng));
  return v;
}

template <class T>
std::vector<T> host_of(const Tensor& t) {
  const T* p = t.data<T>();
  return std::vector<T>(p, p + t.numel());
}

// Parameters as CPU tensors and as device arrays with their state slots (zeroed).
template <class T>
struct Model {
  Model(std::mt19937_64& rng, const Stream& st) {
    for (std::int64_t n : kSizes) {
      const std::vector<T> init = random_vector<T>(n, rng);
      Tensor p = Tensor::from_vector<T>(init, {n});
      p.set_requires_grad(true);
      cpu.push_back(p);
      param.emplace_back(init, st);
      grad.emplace_back(std::vector<T>(n, T(0)), st);
      state1.emplace_back(std::vector<T>(n, T(0)), st);
      state2.emplace_back(std::vector<T>(n, T(0)), st);
    }
  }
  std::vector<TensorSlots> slots() const {
    std::vector<TensorSlots> s;
    for (std::size_t i = 0; i < cpu.size(); ++i)
      s.push_back({{param[i].get(), grad[i].get(), state1[i].get(), state2[i].get()},
                   static_cast<std::int64_t>(param[i].size())});
    return s;
  }
  // New random gradients, the same on both sides.
  void new_grads(std::mt19937_64& rng, const Stream& st) {
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      const std::vector<T> g = random_vector<T>(cpu[i].numel(), rng);
      cpu[i].set_grad(Tensor::from_vector<T>(g, {cpu[i].numel()}));
      grad[i] = DeviceArray<T>(g, st);
    }
  }
  std::vector<Tensor> cpu;
  std::vector<DeviceArray<T>> param, grad, state1, state2;
};

template <class T>
void compare(const std::string& what, const DeviceArray<T>& d, const Tensor& cpu, const Stream& st,
             int& bit_identical, int& total) {
  const std::vector<T> a = d.download(st), e = host_of<T>(cpu);
  require_close(what, a, e, parity_rtol<T>());
  bit_identical += mcd::testing::bitwise_equal(a, e) ? 1 : 0;
  total += 1;
}

template <class T>
void check_sgd(const mcd::optim::SgdOptions& o, std::uint64_t seed) {
  INFO("SGD momentum " << o.momentum << " dampening " << o.dampening << " weight decay "
                       << o.weight_decay << " nesterov " << o.nesterov
                       << (sizeof(T) == 4 ? " float32" : " float64"));
  std::mt19937_64 rng(seed);
  Stream st(0);
  Model<T> m(rng, st);
  mcd::optim::Sgd cpu(m.cpu, o);
  int same = 0, total = 0;
  for (int step = 0; step < kSteps; ++step) {
    m.new_grads(rng, st);
    const MultiTensorList list(m.slots(), st);  // grads were reallocated: a new table
    cpu.step();
    mcd::kernels::cuda::sgd_step_cuda<T>(
        list, {o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, step > 0}, st.get());
    st.synchronize();
    for (std::size_t i = 0; i < m.cpu.size(); ++i) {
      compare("param " + std::to_string(i), m.param[i], m.cpu[i], st, same, total);
      if (o.momentum != 0.0)
        compare("momentum buffer " + std::to_string(i), m.state1[i], cpu.momentum_buffer(i), st,
                same, total);
    }
  }
  WARN("SGD: " << same << " of " << total << " compared arrays bit-identical to the CPU");
}

template <class T>
void check_adam(const mcd::optim::AdamOptions& o, bool decoupled, std::uint64_t seed) {
  INFO((decoupled ? "AdamW" : "Adam")
       << " weight decay " << o.weight_decay << (sizeof(T) == 4 ? " float32" : " float64"));
  std::mt19937_64 rng(seed);
  Stream st(0);
  Model<T> m(rng, st);
  std::unique_ptr<mcd::optim::Adam> cpu;
  if (decoupled)
    cpu = std::make_unique<mcd::optim::AdamW>(
        m.cpu, mcd::optim::AdamWOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay});
  else
    cpu = std::make_unique<mcd::optim::Adam>(m.cpu, o);
  int same = 0, total = 0;
  for (int step = 1; step <= kSteps; ++step) {
    m.new_grads(rng, st);
    const MultiTensorList list(m.slots(), st);
    cpu->step();
    mcd::kernels::cuda::adam_step_cuda<T>(
        list, {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, decoupled, step}, st.get());
    st.synchronize();
    for (std::size_t i = 0; i < m.cpu.size(); ++i) {
      compare("param " + std::to_string(i), m.param[i], m.cpu[i], st, same, total);
      compare("exp_avg " + std::to_string(i), m.state1[i], cpu->exp_avg(i), st, same, total);
      compare("exp_avg_sq " + std::to_string(i), m.state2[i], cpu->exp_avg_sq(i), st, same, total);
    }
  }
  WARN((decoupled ? "AdamW: " : "Adam: ")
       << same << " of " << total << " compared arrays bit-identical to the CPU");
}

}  // namespace

TEST_CASE("Multi-tensor SGD matches the CPU optimizer", "[gpu][optim]") {
  const std::vector<mcd::optim::SgdOptions> options = {
      {0.1, 0.9, 0.0, 1e-4, true},
      {0.05, 0.75, 0.1, 0.0, false},
      {0.1, 0.0, 0.0, 5e-4, false},
      {0.1, 0.0, 0.0, 0.0, false},
  };
  std::uint64_t seed = 1;
  for (const auto& o : options) {
    check_sgd<float>(o, seed);
    check_sgd<double>(o, seed);
    ++seed;
  }
}

TEST_CASE("Multi-tensor Adam and AdamW match the CPU optimizers", "[gpu][optim]") {
  check_adam<float>({1e-3, 0.9, 0.999, 1e-8, 0.0}, false, 1);
  check_adam<double>({1e-3, 0.9, 0.999, 1e-8, 1e-4}, false, 2);
  check_adam<float>({1e-3, 0.9, 0.999, 1e-8, 1e-4}, false, 3);
  check_adam<float>({1e-3, 0.9, 0.999, 1e-8, 1e-2}, true, 4);
  check_adam<double>({2e-3, 0.8, 0.99, 1e-6, 1e-2}, true, 5);
}
