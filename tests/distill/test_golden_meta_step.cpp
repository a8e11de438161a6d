// One full MC-Distil iteration in float64 against PyTorch (fixture written by
// tests/golden/make_meta_step_fixture.py): our forward-mode meta-gradient must equal the
// released code's create_graph double backward through the SGD lookahead, and the meta step
// must leave the real students (weights, running statistics, momentum buffers) bit-identical.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/distill/meta_step.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/optim/adam.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/safetensors.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

#ifndef MCD_GOLDEN_DIR
#error "MCD_GOLDEN_DIR must point at tests/golden"
#endif

using namespace mcd;

namespace {

constexpr double kRtol = 1e-8;

struct Student {
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::Sgd> optimizer;
};

const Tensor& fixture(const SafetensorsFile& f, const std::string& key) {
  const auto it = f.tensors.find(key);
  if (it == f.tensors.end()) fail("meta_step.safetensors: missing tensor '{}'", key);
  return it->second;
}

const std::string& meta_string(const SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata.find(key);
  if (it == f.metadata.end()) fail("meta_step.safetensors: missing metadata field '{}'", key);
  return it->second;
}

double meta_real(const SafetensorsFile& f, const std::string& key) {
  return std::stod(meta_string(f, key));
}

std::int64_t meta_int(const SafetensorsFile& f, const std::string& key) {
  return std::stoll(meta_string(f, key));
}

// Entries under `prefix`, renamed without it, except those whose rest starts with `skip`.
StateDict with_prefix(const StateDict& all, const std::string& prefix,
                      const std::string& skip = "") {
  StateDict out;
  for (const auto& [k, v] : all) {
    if (k.rfind(prefix, 0) != 0) continue;
    const std::string rest = k.substr(prefix.size());
    if (!skip.empty() && rest.rfind(skip, 0) == 0) continue;
    out[rest] = v;
  }
  return out;
}

// Relative error per element, against max(|ref_i|, 1e-6 max|ref|): an element that cancels
// to nearly zero is held to the tensor's scale, not to its own rounding noise.
void require_close(const std::string& what, const Tensor& ours, const Tensor& ref,
                   double rtol = kRtol) {
  INFO(what);
  REQUIRE(ours.defined());
  REQUIRE(shape_str(ours.shape()) == shape_str(ref.shape()));
  const auto a = ours.to_doubles(), b = ref.to_doubles();
  double scale = 0;
  for (const double v : b)
    scale = std::max(scale, std::abs(v));
  const double floor = std::max(1e-6 * scale, 1e-300);
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), floor);
    if (!(err <= worst)) worst = err, at = i;  // NaN counts as the worst
  }
  INFO(
      fmt::format("{}: worst relative error {:.3g} at flat index {} (ours {:.17g}, PyTorch "
                  "{:.17g})",
                  what, worst, at, a.empty() ? 0.0 : a[at], b.empty() ? 0.0 : b[at]));
  CHECK(worst <= rtol);
}

Tensor deep_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  out.copy_(t);
  return out;
}

StateDict deep_copy(const StateDict& s) {
  StateDict out;
  for (const auto& [k, v] : s)
    out[k] = deep_copy(v);
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(),
                     static_cast<std::size_t>(ca.numel()) * dtype_size(ca.dtype())) == 0;
}

void require_identical(const std::string& what, const StateDict& before, const StateDict& after) {
  INFO(what);
  REQUIRE(before.size() == after.size());
  for (const auto& [key, t] : before) {
    INFO(fmt::format("{}: key '{}' changed", what, key));
    REQUIRE(after.count(key) == 1);
    CHECK(same_bits(t, after.at(key)));
  }
}

Student make_student(const SafetensorsFile& f, std::size_t k, Generator& gen) {
  const std::string prefix = fmt::format("student{}.", k);
  const std::int64_t size = meta_int(f, "input_size");
  Student s;
  s.model = nn::make_model(meta_string(f, prefix + "arch"),
                           {meta_int(f, "channels"), meta_int(f, "num_classes"), size}, gen);
  s.model->to(DType::Float64);
  s.model->load_state_dict(with_prefix(f.tensors, prefix, "buffer."), prefix + "*");
  s.model->train();

  optim::SgdOptions o;
  o.lr = meta_real(f, prefix + "lr");
  o.momentum = meta_real(f, prefix + "momentum");
  o.dampening = meta_real(f, prefix + "dampening");
  o.weight_decay = meta_real(f, prefix + "weight_decay");
  o.nesterov = meta_int(f, prefix + "nesterov") != 0;
  s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), o);

  // The fixture's momentum buffers, in Sgd's state-dict layout (parameter order).
  const auto named = s.model->named_parameters();
  StateDict state;
  state["lr"] = Tensor::scalar(o.lr, DType::Float64);
  state["num_params"] =
      Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(named.size())}, Shape{});
  state["momentum"] = Tensor::scalar(o.momentum, DType::Float64);
  state["dampening"] = Tensor::scalar(o.dampening, DType::Float64);
  state["weight_decay"] = Tensor::scalar(o.weight_decay, DType::Float64);
  state["nesterov"] = Tensor::from_vector<std::int64_t>({o.nesterov ? 1 : 0}, Shape{});
  for (std::size_t i = 0; i < named.size(); ++i)
    state[fmt::format("state.{}.momentum_buffer", i)] =
        fixture(f, prefix + "buffer." + named[i].first);
  s.optimizer->load_state_dict(state, prefix + "buffer.*");
  return s;
}

}  // namespace

TEST_CASE("one MC-Distil iteration matches PyTorch's double backward in float64",
          "[golden][meta]") {
  const std::string path = std::string(MCD_GOLDEN_DIR) + "/meta_step.safetensors";
  const SafetensorsFile f = load_safetensors(path);
  const auto num_students = static_cast<std::size_t>(meta_int(f, "num_students"));
  const std::int64_t size = meta_int(f, "input_size");
  const double tau = meta_real(f, "tau");

  Generator gen(0);
  std::vector<Student> students;
  for (std::size_t k = 0; k < num_students; ++k)
    students.push_back(make_student(f, k, gen));

  nn::CNetConfig cc;
  cc.input = nn::CNetInput::Image;
  cc.head = nn::CNetHead::Sigmoid;
  cc.num_students = static_cast<std::int64_t>(num_students);
  cc.backbone = meta_string(f, "cnet_arch");
  cc.image = {meta_int(f, "channels"), 0, size};
  auto cnet = std::make_shared<nn::CNet>(cc, gen);
  cnet->to(DType::Float64);
  cnet->load_state_dict(with_prefix(f.tensors, "cnet."), "cnet.*");
  cnet->train();
  optim::AdamOptions ao;
  ao.lr = meta_real(f, "adam.lr");
  ao.beta1 = meta_real(f, "adam.beta1");
  ao.beta2 = meta_real(f, "adam.beta2");
  ao.eps = meta_real(f, "adam.eps");
  ao.weight_decay = meta_real(f, "adam.weight_decay");
  optim::Adam adam(cnet->parameters(), ao);

  const distill::LabelledBatch train{fixture(f, "x"), fixture(f, "y")};
  const distill::LabelledBatch val{fixture(f, "xv"), fixture(f, "yv")};
  const distill::TeacherTargets teacher =
      distill::make_teacher_targets(fixture(f, "teacher_logits"), tau);

  // ---- meta step
  std::vector<StateDict> model_before, optimizer_before;
  std::vector<distill::StudentRef> refs;
  for (const Student& s : students) {
    model_before.push_back(deep_copy(s.model->state_dict()));
    optimizer_before.push_back(s.optimizer->state_dict());
    refs.push_back({s.model.get(), s.optimizer.get()});
  }
  const StateDict cnet_params_before = [&] {
    StateDict out;
    for (const auto& [name, p] : cnet->named_parameters())
      out[name] = deep_copy(p);
    return out;
  }();

  const distill::MetaStepResult meta = distill::meta_gradient(refs, *cnet, train, teacher, val);

  for (std::size_t k = 0; k < students.size(); ++k) {
    const std::string who = fmt::format("student{}", k);
    require_identical(who + " state after meta_gradient", model_before[k],
                      students[k].model->state_dict());
    require_identical(who + " optimizer state after meta_gradient", optimizer_before[k],
                      students[k].optimizer->state_dict());
    for (const auto& [name, p] : students[k].model->named_parameters()) {
      INFO(fmt::format("{}.{} has a gradient after meta_gradient", who, name));
      CHECK_FALSE(p.grad().defined());
    }
  }
  for (const auto& [name, p] : cnet->named_parameters()) {
    INFO(fmt::format("meta_gradient wrote into the C-Net's parameter {}", name));
    CHECK(same_bits(p, cnet_params_before.at(name)));
    CHECK_FALSE(p.grad().defined());
  }

  require_close("meta.weights", meta.weights, fixture(f, "meta.weights"));
  require_close("meta.student_losses", meta.student_losses, fixture(f, "meta.student_losses"));
  require_close("meta.meta_losses", meta.meta_losses, fixture(f, "meta.meta_losses"));
  require_close("meta.weight_grad", meta.weight_grad, fixture(f, "meta.weight_grad"));
  const auto cnet_named = cnet->named_parameters();
  REQUIRE(meta.cnet_grads.size() == cnet_named.size());
  for (std::size_t i = 0; i < cnet_named.size(); ++i)
    require_close("meta.cnet_grad." + cnet_named[i].first, meta.cnet_grads[i],
                  fixture(f, "meta.cnet_grad." + cnet_named[i].first));

  for (std::size_t i = 0; i < cnet_named.size(); ++i) {
    Tensor p = cnet_named[i].second;
    p.set_grad(meta.cnet_grads[i]);
  }
  adam.step();

  // ---- normal step, with the updated C-Net's detached weights
  std::vector<Tensor> logits;
  for (Student& s : students) {
    s.optimizer->zero_grad();
    logits.push_back((*s.model)(train.images));
  }
  Tensor w2;
  {
    NoGradGuard no_grad;
    w2 = distill::cnet_weights(*cnet, train.images, logits, teacher, train.labels);
  }
  require_close("normal.weights", w2, fixture(f, "normal.weights"));
  const distill::FusedLossOutput fused = distill::fused_distill_loss(
      logits, teacher, train.labels, distill::alpha_of(w2), distill::beta_of(w2));
  require_close("normal.student_losses", fused.loss, fixture(f, "normal.student_losses"));
  const std::int64_t b = logits[0].size(0), v = logits[0].size(1);
  for (std::size_t k = 0; k < students.size(); ++k) {
    const auto ki = static_cast<std::int64_t>(k);
    backward({logits[k]}, {fused.grad_logits.slice(0, ki, ki + 1).reshape({b, v})});
    students[k].optimizer->step();
  }

  // ---- states after the whole iteration (running statistics and counters included)
  const StateDict cnet_after = with_prefix(f.tensors, "after.cnet.");
  const StateDict cnet_state = cnet->state_dict();
  REQUIRE(cnet_state.size() == cnet_after.size());
  for (const auto& [key, ref] : cnet_after) {
    REQUIRE(cnet_state.count(key) == 1);
    require_close("after.cnet." + key, cnet_state.at(key), ref);
  }
  for (std::size_t k = 0; k < students.size(); ++k) {
    const std::string prefix = fmt::format("after.student{}.", k);
    const StateDict expected = with_prefix(f.tensors, prefix);
    const StateDict ours = students[k].model->state_dict();
    REQUIRE(ours.size() == expected.size());
    for (const auto& [key, ref] : expected) {
      REQUIRE(ours.count(key) == 1);
      require_close(prefix + key, ours.at(key), ref);
    }
  }
}
