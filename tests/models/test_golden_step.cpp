// One training step of resnet10_xxxs in float64 against PyTorch (fixture written by
// tests/golden/make_resnet_step_fixture.py): logits, loss, every gradient, and the weights
// and BatchNorm running statistics after an SGD step with Nesterov momentum and weight decay.
#include <cmath>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/safetensors.h>
#include <mcd/models/registry.h>

#ifndef MCD_GOLDEN_DIR
#error "MCD_GOLDEN_DIR must point at tests/golden"
#endif

using namespace mcd;

namespace {

StateDict with_prefix(const StateDict& all, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

void require_close(const std::string& what, const Tensor& ours, const Tensor& ref, double rtol) {
  REQUIRE(ours.shape() == ref.shape());
  const auto a = ours.to_doubles(), b = ref.to_doubles();
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(a[i] - b[i]) / (1e-12 + std::abs(b[i]));
    if (std::abs(a[i] - b[i]) > 1e-13 && err > worst) worst = err, at = i;
  }
  INFO(fmt::format("{}: worst relative error {:.3g} at {} (ours {:.17g}, PyTorch {:.17g})", what,
                   worst, at, a.empty() ? 0.0 : a[at], b.empty() ? 0.0 : b[at]));
  CHECK(worst <= rtol);
}

}  // namespace

TEST_CASE("resnet10_xxxs training step matches PyTorch in float64", "[golden]") {
  const std::string path = std::string(MCD_GOLDEN_DIR) + "/resnet_step.safetensors";
  const SafetensorsFile f = load_safetensors(path);
  Generator gen(0);
  auto model = nn::make_model("resnet10_xxxs", {3, 5, 12}, gen);
  model->to(DType::Float64);
  model->load_state_dict(with_prefix(f.tensors, "init."), path);
  model->train();

  optim::SgdOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 5e-4;
  so.nesterov = true;
  optim::Sgd opt(model->parameters(), so);

  const Tensor logits = (*model)(f.tensors.at("x"));
  const Tensor loss = mean(cross_entropy(logits, f.tensors.at("y")));
  require_close("logits", logits, f.tensors.at("logits"), 1e-10);
  require_close("loss", loss, f.tensors.at("loss"), 1e-12);
  loss.backward();
  for (const auto& [name, p] : model->named_parameters())
    require_close("grad." + name, p.grad(), f.tensors.at("grad." + name), 1e-9);
  opt.step();
  const StateDict expected = with_prefix(f.tensors, "step.");
  const StateDict ours = model->state_dict();
  REQUIRE(ours.size() == expected.size());
  for (const auto& [name, t] : expected)
    require_close("step." + name, ours.at(name), t, 1e-10);
}
