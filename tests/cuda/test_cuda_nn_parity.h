// Op-level CPU/CUDA parity for the engine's ops: a function of tensors evaluated on CPU
// inputs and on device copies of them, comparing the forward values, the VJP (reverse-mode
// gradients for one random cotangent) and the JVP (forward-mode tangent for random input
// tangents). Cotangents and tangents are drawn on the host and copied, so both sides see the
// same values; device outputs are read back with Tensor::to(Device::cpu()).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/tensor.h>

#include "cuda/cuda_test_support.h"

namespace mcd::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline std::vector<double> host_values(const Tensor& t) {
  return t.to(Device::cpu()).to_doubles();
}

inline void require_tensor_close(const std::string& what, const Tensor& cuda, const Tensor& cpu,
                                 double rtol) {
  INFO(what);
  REQUIRE(cuda.defined() == cpu.defined());
  if (!cpu.defined()) return;
  REQUIRE(cuda.device().type == DeviceType::CUDA);
  REQUIRE(cuda.shape() == cpu.shape());
  require_close<double>(what, host_values(cuda), cpu.to_doubles(), rtol);
}

inline std::vector<Tensor> to_cuda_leaves(const std::vector<Tensor>& host, bool requires_grad) {
  std::vector<Tensor> out;
  for (const Tensor& t : host) {
    Tensor d = t.detach().to(Device::cuda()).detach();
    if (requires_grad && is_floating(d.dtype())) d.set_requires_grad(true);
    out.push_back(d);
  }
  return out;
}

inline std::vector<Tensor> host_leaves(const std::vector<Tensor>& host, bool requires_grad) {
  std::vector<Tensor> out;
  for (const Tensor& t : host) {
    Tensor d = t.detach().clone();
    if (requires_grad && is_floating(d.dtype())) d.set_requires_grad(true);
    out.push_back(d);
  }
  return out;
}

// Forward, VJP with respect to every floating input, and JVP with a tangent on every floating
// input; `rtol` is the normwise relative tolerance of require_close.
inline void check_op_parity(const std::string& name, const OpFn& f,
                            const std::vector<Tensor>& inputs, double rtol, Generator& gen,
                            bool check_jvp = true) {
  // ---- forward and VJP
  {
    const std::vector<Tensor> xc = host_leaves(inputs, true), xd = to_cuda_leaves(inputs, true);
    const Tensor yc = f(xc), yd = f(xd);
    require_tensor_close(name + " forward", yd, yc, rtol);
    const Tensor u = Tensor::randn(yc.shape(), gen, yc.dtype());
    std::vector<Tensor> wc, wd;
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (is_floating(inputs[i].dtype())) {
        wc.push_back(xc[i]);
        wd.push_back(xd[i]);
      }
    const std::vector<Tensor> gc = grad({yc}, wc, {u});
    const std::vector<Tensor> gd = grad({yd}, wd, {u.to(Device::cuda())});
    for (std::size_t i = 0; i < gc.size(); ++i)
      require_tensor_close(name + " vjp of input " + std::to_string(i), gd[i], gc[i], rtol);
  }
  if (!check_jvp) return;
  // ---- JVP
  const std::vector<Tensor> xc = host_leaves(inputs, false), xd = to_cuda_leaves(inputs, false);
  std::vector<Tensor> tc, td;
  std::vector<std::size_t> floating_at;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (is_floating(inputs[i].dtype())) {
      const Tensor t = Tensor::randn(inputs[i].shape(), gen, inputs[i].dtype());
      tc.push_back(t);
      td.push_back(t.to(Device::cuda()));
      floating_at.push_back(i);
    }
  // jvp() takes the differentiated inputs as primals; the others are captured.
  auto restricted = [&](const std::vector<Tensor>& all) {
    return [&, all](const std::vector<Tensor>& primals) {
      std::vector<Tensor> args = all;
      for (std::size_t j = 0; j < floating_at.size(); ++j)
        args[floating_at[j]] = primals[j];
      return std::vector<Tensor>{f(args)};
    };
  };
  std::vector<Tensor> pc, pd;
  for (std::size_t i : floating_at) {
    pc.push_back(xc[i]);
    pd.push_back(xd[i]);
  }
  const JvpResult jc = jvp(restricted(xc), pc, tc);
  const JvpResult jd = jvp(restricted(xd), pd, td);
  require_tensor_close(name + " jvp", jd.tangents[0], jc.tangents[0], rtol);
}

}  // namespace mcd::testing
