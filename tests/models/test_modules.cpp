// Module bookkeeping and layers: dotted names and registration order, PyTorch default
// initialisation, BatchNorm train/eval semantics, state-dict aliasing, load_state_dict
// validation (nothing changes on a failed load) and in-place dtype conversion.
#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/models/layers.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"

using namespace mcd;
using namespace mcd::nn;
using mcd::testing::random_tensor;

namespace {

// conv -> bn -> relu -> flatten -> head (Sequential of one Linear), on (N, 2, 3, 3) inputs.
class TinyNet : public Module {
 public:
  explicit TinyNet(Generator& gen) {
    conv = register_module("conv", std::make_shared<Conv2d>(2, 4, 3, gen, 1, 1));
    bn = register_module("bn", std::make_shared<BatchNorm2d>(4));
    head = register_module("head", std::make_shared<Sequential>());
    head->push_back(std::make_shared<Linear>(36, 5, gen));
    scale = register_parameter("scale", Tensor::ones({5}));
  }
  Tensor forward(const Tensor& x) override {
    return head->forward(relu(bn->forward(conv->forward(x))).flatten(1)) * scale;
  }
  void register_again(const std::string& name) { register_buffer(name, Tensor::zeros({1})); }

  std::shared_ptr<Conv2d> conv;
  std::shared_ptr<BatchNorm2d> bn;
  std::shared_ptr<Sequential> head;
  Tensor scale;
};

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<std::string> out;
  for (const auto& [name, t] : named)
    out.push_back(name);
  return out;
}

// Every value of every state-dict entry, copied out, to detect any change to a module.
std::map<std::string, std::vector<double>> snapshot(const Module& m) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& [key, t] : m.state_dict())
    out[key] = t.to_doubles();
  return out;
}

std::string load_error(Module& m, const StateDict& state, const std::string& source,
                       bool strict = true) {
  try {
    m.load_state_dict(state, source, strict);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_doubles())
    m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

TEST_CASE("named parameters, buffers and children use dotted names in registration order",
          "[module]") {
  Generator gen(1);
  TinyNet net(gen);
  CHECK(names_of(net.named_parameters()) ==
        std::vector<std::string>{"scale", "conv.weight", "conv.bias", "bn.weight", "bn.bias",
                                 "head.0.weight", "head.0.bias"});
  CHECK(names_of(net.named_buffers()) ==
        std::vector<std::string>{"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"});
  CHECK(net.num_parameters() == 5 + (4 * 2 * 9 + 4) + 4 + 4 + (5 * 36 + 5));
  for (const auto& p : net.parameters()) {
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  const auto children = net.named_children();
  REQUIRE(children.size() == 3);
  CHECK(children[2].first == "head");
  CHECK(net.state_dict().size() == 10);

  CHECK_THROWS_WITH(net.register_again("scale"), Catch::Contains("'scale' is already registered"));
  CHECK_THROWS_WITH(net.register_again("a.b"), Catch::Contains("invalid name 'a.b'"));

  const Tensor y = net(Tensor::randn({3, 2, 3, 3}, gen));
  CHECK(y.shape() == Shape{3, 5});
}

TEST_CASE("Conv2d and Linear initialise as PyTorch's kaiming_uniform_(a = sqrt(5))", "[init]") {
  Generator gen(2);
  auto check_uniform = [](const Tensor& t, double bound) {
    INFO("tensor " << shape_str(t.shape()) << " bound " << bound);
    const auto v = t.to_doubles();
    double sum = 0, sq = 0, top = 0;
    for (double x : v) {
      sum += x;
      sq += x * x;
      top = std::max(top, std::abs(x));
    }
    const double n = static_cast<double>(v.size());
    CHECK(top <= bound);
    // U(-b, b): mean 0 and variance b^2 / 3; the tails reach close to the bound.
    CHECK(std::abs(sum / n) < 5 * bound / std::sqrt(3 * n));
    CHECK(sq / n == Approx(bound * bound / 3).epsilon(0.1));
    CHECK(top > 0.9 * bound);
  };

  Conv2d conv(16, 32, 3, gen);
  CHECK(conv.weight().shape() == Shape{32, 16, 3, 3});
  check_uniform(conv.weight(), 1.0 / 12.0);  // fan_in = 16 * 3 * 3
  REQUIRE(conv.bias().defined());
  CHECK(max_abs(conv.bias()) <= 1.0 / 12.0);

  Conv2d depthwise(64, 64, 3, gen, 1, 1, 64, false);
  CHECK(depthwise.weight().shape() == Shape{64, 1, 3, 3});
  check_uniform(depthwise.weight(), 1.0 / 3.0);  // fan_in = 1 * 3 * 3
  CHECK_FALSE(depthwise.bias().defined());
  CHECK(depthwise.named_parameters().size() == 1);

  Linear fc(400, 100, gen);
  check_uniform(fc.weight(), 0.05);  // fan_in = 400
  check_uniform(fc.bias(), 0.05);

  BatchNorm2d bn(6);
  CHECK(bn.weight().to_doubles() == std::vector<double>(6, 1.0));
  CHECK(bn.bias().to_doubles() == std::vector<double>(6, 0.0));
  CHECK(bn.running_mean().to_doubles() == std::vector<double>(6, 0.0));
  CHECK(bn.running_var().to_doubles() == std::vector<double>(6, 1.0));
  CHECK(bn.num_batches_tracked() == 0);

  // The generator alone fixes the initial weights.
  Generator g1(99), g2(99), g3(100);
  CHECK(Linear(7, 3, g1).weight().to_doubles() == Linear(7, 3, g2).weight().to_doubles());
  CHECK(Linear(7, 3, g1).weight().to_doubles() != Linear(7, 3, g3).weight().to_doubles());

  CHECK_THROWS_WITH(Conv2d(6, 4, 3, gen, 1, 0, 4), Catch::Contains("groups 4 must divide"));
}

TEST_CASE("BatchNorm2d uses batch statistics in training and running ones in eval", "[batchnorm]") {
  Generator gen(3);
  BatchNorm2d bn(3);
  bn.to(DType::Float64);
  const std::int64_t N = 4, C = 3, HW = 5 * 5;
  const Tensor x = random_tensor({N, C, 5, 5}, gen, -1.0, 3.0);
  const auto xv = x.to_doubles();

  // Per-channel batch mean and biased / unbiased variance, by hand.
  std::vector<double> mean(C, 0.0), var(C, 0.0);
  const double count = static_cast<double>(N * HW);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < HW; ++i)
        mean[c] += xv[(n * C + c) * HW + i] / count;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < HW; ++i) {
        const double d = xv[(n * C + c) * HW + i] - mean[c];
        var[c] += d * d / count;
      }

  REQUIRE(bn.is_training());
  const auto y = bn(x).to_doubles();
  CHECK(bn.num_batches_tracked() == 1);
  const auto rm = bn.running_mean().to_doubles(), rv = bn.running_var().to_doubles();
  for (std::int64_t c = 0; c < C; ++c) {
    CHECK(rm[c] == Approx(0.1 * mean[c]).margin(1e-12));
    CHECK(rv[c] == Approx(0.9 + 0.1 * var[c] * count / (count - 1)).margin(1e-12));
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < HW; ++i) {
        const std::int64_t k = (n * C + c) * HW + i;
        CHECK(y[k] == Approx((xv[k] - mean[c]) / std::sqrt(var[c] + 1e-5)).margin(1e-10));
      }
  }

  bn.eval();
  CHECK_FALSE(bn.is_training());
  const auto ye = bn(x).to_doubles();
  CHECK(bn.num_batches_tracked() == 1);
  CHECK(bn.running_mean().to_doubles() == rm);
  CHECK(bn.running_var().to_doubles() == rv);
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < HW; ++i) {
        const std::int64_t k = (n * C + c) * HW + i;
        CHECK(ye[k] == Approx((xv[k] - rm[c]) / std::sqrt(rv[c] + 1e-5)).margin(1e-10));
      }

  bn.train();
  bn(x);
  bn(x);
  CHECK(bn.num_batches_tracked() == 3);
  CHECK_THROWS_WITH(bn(random_tensor({2, 4, 3, 3}, gen)), Catch::Contains("expected 3 channels"));
}

TEST_CASE("train() and eval() reach every submodule", "[module]") {
  Generator gen(4);
  auto model = make_model("resnet10_xxxs", {}, gen);
  auto all_training = [&](bool expected) {
    bool ok = model->is_training() == expected;
    std::vector<std::shared_ptr<Module>> stack;
    for (auto& [name, c] : model->named_children())
      stack.push_back(c);
    while (!stack.empty()) {
      auto m = stack.back();
      stack.pop_back();
      ok = ok && m->is_training() == expected;
      for (auto& [name, c] : m->named_children())
        stack.push_back(c);
    }
    return ok;
  };
  CHECK(all_training(true));
  model->eval();
  CHECK(all_training(false));

  // Eval forwards leave every buffer alone and are deterministic.
  const Tensor x = Tensor::randn({2, 3, 32, 32}, gen);
  const auto before = snapshot(*model);
  const auto y1 = model->forward(x).to_doubles();
  const auto y2 = model->forward(x).to_doubles();
  CHECK(y1 == y2);
  CHECK(snapshot(*model) == before);

  model->train();
  CHECK(all_training(true));
  const auto y3 = model->forward(x).to_doubles();
  CHECK(y3 != y1);  // batch statistics instead of running ones
  const auto after = snapshot(*model);
  CHECK(after.at("layer1.0.bn1.num_batches_tracked") == std::vector<double>{1.0});
  CHECK(after.at("bn1.running_mean") != before.at("bn1.running_mean"));
}

TEST_CASE("state_dict aliases the module and load_state_dict round-trips", "[state_dict]") {
  Generator gen(5);
  auto a = make_model("resnet10_xxxs", {}, gen);
  auto b = make_model("resnet10_xxxs", {}, gen);
  const Tensor x = Tensor::randn({2, 3, 32, 32}, gen);
  a->forward(x);  // non-trivial running statistics and num_batches_tracked
  a->eval();
  b->eval();
  REQUIRE(a->forward(x).to_doubles() != b->forward(x).to_doubles());

  const auto params_before = b->parameters();
  b->load_state_dict(a->state_dict(), "model a");
  CHECK(snapshot(*b) == snapshot(*a));
  CHECK(b->forward(x).to_doubles() == a->forward(x).to_doubles());
  // Loading writes into the existing tensors: handles held elsewhere stay live.
  const auto params_after = b->parameters();
  REQUIRE(params_after.size() == params_before.size());
  for (std::size_t i = 0; i < params_after.size(); ++i)
    CHECK(params_after[i].impl_ptr() == params_before[i].impl_ptr());

  // The state dict's tensors alias the module's storage.
  StateDict sa = a->state_dict();
  CHECK_FALSE(sa.at("fc.bias").requires_grad());
  sa.at("fc.bias").fill_(0.25);
  for (const auto& [name, p] : a->named_parameters())
    if (name == "fc.bias") CHECK(p.to_doubles() == std::vector<double>(10, 0.25));

  // Non-strict loads accept extra keys.
  StateDict extra = a->state_dict();
  extra.emplace("teacher.fc.weight", Tensor::zeros({3, 3}));
  CHECK_NOTHROW(b->load_state_dict(extra, "extra", false));
  CHECK(snapshot(*b) == snapshot(*a));
}

TEST_CASE("load_state_dict validates every key first and changes nothing on failure",
          "[state_dict]") {
  Generator gen(6);
  auto model = make_model("resnet10_s", {}, gen);
  auto other = make_model("resnet10_s", {}, gen);
  const auto original = snapshot(*model);

  SECTION("missing key") {
    StateDict s = other->state_dict();
    s.erase("layer2.0.downsample.1.running_var");
    const std::string msg = load_error(*model, s, "ckpt/missing.safetensors");
    CHECK_THAT(msg, Catch::Contains("ckpt/missing.safetensors"));
    CHECK_THAT(msg, Catch::Contains("missing key 'layer2.0.downsample.1.running_var'"));
    CHECK_THAT(msg, Catch::Contains("[16]"));
    // Also missing in a non-strict load.
    CHECK_FALSE(load_error(*model, s, "x", false).empty());
  }
  SECTION("wrong shape") {
    StateDict s = other->state_dict();
    s["fc.weight"] = Tensor::zeros({10, 63});
    const std::string msg = load_error(*model, s, "ckpt/shape.safetensors");
    CHECK_THAT(msg, Catch::Contains("ckpt/shape.safetensors"));
    CHECK_THAT(msg, Catch::Contains("'fc.weight'"));
    CHECK_THAT(msg, Catch::Contains("[10, 63]"));
    CHECK_THAT(msg, Catch::Contains("[10, 64]"));
  }
  SECTION("wrong dtype") {
    StateDict s = other->state_dict();
    s["layer1.0.bn1.num_batches_tracked"] = Tensor::zeros({});
    const std::string msg = load_error(*model, s, "ckpt/dtype");
    CHECK_THAT(msg, Catch::Contains("'layer1.0.bn1.num_batches_tracked'"));
    CHECK_THAT(msg, Catch::Contains("float32"));
    CHECK_THAT(msg, Catch::Contains("int64"));
  }
  SECTION("unexpected key") {
    StateDict s = other->state_dict();
    s.emplace("layer5.0.conv1.weight", Tensor::zeros({2, 2}));
    const std::string msg = load_error(*model, s, "ckpt/extra.safetensors");
    CHECK_THAT(msg, Catch::Contains("ckpt/extra.safetensors"));
    CHECK_THAT(msg, Catch::Contains("unexpected key 'layer5.0.conv1.weight'"));
  }
  SECTION("several problems are all reported") {
    StateDict s = other->state_dict();
    s.erase("conv1.weight");
    s["fc.bias"] = Tensor::zeros({11});
    const std::string msg = load_error(*model, s, "two");
    CHECK_THAT(msg, Catch::Contains("2 problems"));
    CHECK_THAT(msg, Catch::Contains("'conv1.weight'"));
    CHECK_THAT(msg, Catch::Contains("'fc.bias'"));
  }
  // Every other entry of `other` was valid and differs from `model`: none was copied.
  CHECK(snapshot(*model) == original);
}

TEST_CASE("to(dtype) converts in place and keeps every handle", "[module]") {
  Generator gen(7);
  TinyNet net(gen);
  const auto before = net.named_parameters();
  const auto values = snapshot(net);
  const Tensor conv_weight = net.conv->weight();

  net.to(DType::Float64);
  const auto after = net.named_parameters();
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].second.impl_ptr() == before[i].second.impl_ptr());
    CHECK(after[i].second.dtype() == DType::Float64);
    CHECK(after[i].second.requires_grad());
  }
  CHECK(conv_weight.dtype() == DType::Float64);  // a handle taken before the conversion
  for (const auto& [name, t] : net.named_buffers())
    CHECK(t.dtype() == (name == "bn.num_batches_tracked" ? DType::Int64 : DType::Float64));
  CHECK(snapshot(net) == values);  // float32 -> float64 is exact
  const Tensor y = net(random_tensor({2, 2, 3, 3}, gen));
  CHECK(y.dtype() == DType::Float64);
  CHECK_THROWS_WITH(net.to(DType::Int64), Catch::Contains("must be floating"));
}

TEST_CASE("parameter-free layers and Sequential", "[layers]") {
  Generator gen(8);
  const Tensor x = Tensor::randn({2, 3, 8, 8}, gen);
  CHECK(MaxPool2d(2)(x).shape() == Shape{2, 3, 4, 4});
  CHECK(MaxPool2d(3, 2, 1)(x).shape() == Shape{2, 3, 4, 4});
  CHECK(AvgPool2d(2, 1)(x).shape() == Shape{2, 3, 7, 7});
  CHECK(AdaptiveAvgPool2d(1)(x).shape() == Shape{2, 3, 1, 1});
  CHECK(AdaptiveAvgPool2d(3, 2)(x).shape() == Shape{2, 3, 3, 2});
  CHECK(Flatten()(x).shape() == Shape{2, 192});
  for (double v : ReLU()(x).to_doubles())
    CHECK(v >= 0.0);

  // AdaptiveAvgPool2d(1) is the per-channel mean.
  const auto pooled = AdaptiveAvgPool2d(1)(x).to_doubles();
  const auto means = mean(x, {2, 3}).to_doubles();
  for (std::size_t i = 0; i < means.size(); ++i)
    CHECK(pooled[i] == Approx(means[i]));

  Dropout drop(0.5, gen);
  drop.eval();
  CHECK(drop(x).to_doubles() == x.to_doubles());
  drop.train();
  const auto dropped = drop(x).to_doubles(), xv = x.to_doubles();
  int zeros = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    if (dropped[i] == 0.0) {
      ++zeros;
    } else {
      CHECK(dropped[i] == Approx(2.0 * xv[i]));
    }
  }
  CHECK(zeros > 0);
  CHECK(zeros < static_cast<int>(xv.size()));
  CHECK_THROWS_WITH(Dropout(1.0, gen), Catch::Contains("[0, 1)"));

  Sequential seq({std::make_shared<Conv2d>(3, 4, 3, gen, 1, 1), std::make_shared<ReLU>(),
                  std::make_shared<Flatten>()});
  auto fc = seq.push_back(std::make_shared<Linear>(4 * 64, 6, gen));
  CHECK(seq.size() == 4);
  CHECK(seq[3].get() == fc.get());
  CHECK(names_of(seq.named_parameters()) ==
        std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias"});
  CHECK(seq(x).shape() == Shape{2, 6});
  CHECK_THROWS_WITH(seq[4], Catch::Contains("index 4 out of range"));
}

TEST_CASE("Sequential runs BatchNorm2d then ReLU as the fused op, with the same results",
          "[layers]") {
  Generator gen(12);
  const Tensor x0 = random_tensor({3, 4, 5, 5}, gen);
  for (const bool training : {true, false}) {
    auto fused_bn = std::make_shared<BatchNorm2d>(4);
    auto plain_bn = std::make_shared<BatchNorm2d>(4);
    Sequential fused({fused_bn, std::make_shared<ReLU>()});
    fused.to(DType::Float64);
    plain_bn->to(DType::Float64);
    fused.train(training);
    plain_bn->train(training);
    Tensor xa = x0.clone(), xb = x0.clone();
    xa.set_requires_grad(true);
    xb.set_requires_grad(true);
    const Tensor ya = fused(xa);
    const Tensor yb = relu(plain_bn->forward(xb));
    CHECK(ya.to_doubles() == yb.to_doubles());
    // One node for both layers: the fused op, no separate relu.
    REQUIRE(ya.grad_fn() != nullptr);
    CHECK(ya.grad_fn()->name == "batch_norm_relu");
    sum(mul(ya, ya)).backward();
    sum(mul(yb, yb)).backward();
    CHECK(xa.grad().to_doubles() == xb.grad().to_doubles());
    const auto ba = fused_bn->named_buffers(), bb = plain_bn->named_buffers();
    for (std::size_t i = 0; i < ba.size(); ++i)
      CHECK(ba[i].second.to_doubles() == bb[i].second.to_doubles());
    // The fusion leaves the layers and their names as they are.
    CHECK(names_of(fused.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias"});
  }
}
