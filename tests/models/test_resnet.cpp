// The ResNet family: torchvision key names and shapes, parameter counts against closed-form
// counts computed here from the architecture, output shapes for both stems, the registry,
// headless feature extractors (num_classes 0: no fc), float64 derivative checks of blocks
// and a whole small ResNet (input and parameter tangents, training-mode BatchNorm), and one
// gradient step that lowers the loss.
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/models/registry.h>
#include <mcd/models/resnet.h>

#include "support/gradcheck.h"

using namespace mcd;
using namespace mcd::nn;
using mcd::testing::check_gradients;
using mcd::testing::check_parameter_derivatives;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

// Parameters of a ResNet written out from the architecture: bias-free convolutions, two
// parameters per BatchNorm channel, a projection shortcut when stride or width changes.
std::int64_t expected_parameters(const ResNetSpec& spec, std::int64_t in_channels,
                                 std::int64_t classes, bool imagenet_stem) {
  const auto bn = [](std::int64_t c) { return 2 * c; };
  const std::int64_t w0 = spec.widths[0];
  std::int64_t n = (imagenet_stem ? 49 : 9) * in_channels * w0 + bn(w0);
  std::int64_t in = w0;
  for (int s = 0; s < 4; ++s) {
    for (std::int64_t b = 0; b < spec.blocks[s]; ++b) {
      const std::int64_t p = spec.widths[s], stride = (s > 0 && b == 0) ? 2 : 1;
      std::int64_t out = p;
      if (spec.block == BlockKind::Basic) {
        n += 9 * in * p + bn(p) + 9 * p * p + bn(p);
      } else {
        out = 4 * p;
        n += in * p + bn(p) + 9 * p * p + bn(p) + p * out + bn(out);
      }
      if (stride != 1 || in != out) n += in * out + bn(out);
      in = out;
    }
  }
  return n + in * classes + classes;
}

StateDict keyed_state(const std::string& name, const ModelConfig& config) {
  Generator gen(1);
  return make_model(name, config, gen)->state_dict();
}

double dot(const Tensor& a, const Tensor& b) {
  const auto va = a.to_doubles(), vb = b.to_doubles();
  double s = 0;
  for (std::size_t i = 0; i < va.size(); ++i)
    s += va[i] * vb[i];
  return s;
}

}  // namespace

TEST_CASE("resnet10_s has torchvision's state-dict keys and shapes", "[resnet]") {
  const StateDict s = keyed_state("resnet10_s", {3, 10, 32});
  const std::map<std::string, Shape> expected{
      {"conv1.weight", {8, 3, 3, 3}},
      {"bn1.weight", {8}},
      {"bn1.running_mean", {8}},
      {"bn1.num_batches_tracked", {}},
      {"layer1.0.conv1.weight", {8, 8, 3, 3}},
      {"layer1.0.bn1.running_mean", {8}},
      {"layer1.0.bn1.running_var", {8}},
      {"layer1.0.bn1.num_batches_tracked", {}},
      {"layer1.0.conv2.weight", {8, 8, 3, 3}},
      {"layer2.0.conv1.weight", {16, 8, 3, 3}},
      {"layer2.0.downsample.0.weight", {16, 8, 1, 1}},
      {"layer2.0.downsample.1.weight", {16}},
      {"layer2.0.downsample.1.bias", {16}},
      {"layer2.0.downsample.1.running_var", {16}},
      {"layer3.0.conv2.weight", {32, 32, 3, 3}},
      {"layer4.0.downsample.0.weight", {64, 32, 1, 1}},
      {"layer4.0.bn2.bias", {64}},
      {"fc.weight", {10, 64}},
      {"fc.bias", {10}},
  };
  for (const auto& [key, shape] : expected) {
    INFO("key " << key);
    REQUIRE(s.contains(key));
    CHECK(s.at(key).shape() == shape);
  }
  CHECK(s.at("layer1.0.bn1.num_batches_tracked").dtype() == DType::Int64);
  CHECK(s.at("conv1.weight").dtype() == DType::Float32);
  // Stage 1 keeps width and stride: identity shortcut. Convolutions have no bias.
  CHECK_FALSE(s.contains("layer1.0.downsample.0.weight"));
  CHECK_FALSE(s.contains("conv1.bias"));
  CHECK_FALSE(s.contains("layer1.0.conv1.bias"));
  // stem 1 + 5, stage 1 = 12, stages 2-4 = 18 each, fc 2.
  CHECK(s.size() == 6 + 12 + 3 * 18 + 2);

  // With more blocks per stage, later blocks are numbered and have no shortcut.
  const StateDict r18 = keyed_state("resnet18", {3, 100, 32});
  CHECK(r18.at("layer3.1.conv2.weight").shape() == Shape{256, 256, 3, 3});
  CHECK_FALSE(r18.contains("layer3.1.downsample.0.weight"));
  CHECK_FALSE(r18.contains("layer3.2.conv1.weight"));
  CHECK(r18.at("fc.weight").shape() == Shape{100, 512});
}

TEST_CASE("parameter counts match the closed-form count of every registered ResNet", "[resnet]") {
  const ModelConfig cifar100{3, 100, 32};
  for (const auto& name : resnet_model_names()) {
    INFO("model " << name);
    Generator gen(2);
    auto model = make_model(name, cifar100, gen);
    auto resnet = std::dynamic_pointer_cast<ResNet>(model);
    REQUIRE(resnet != nullptr);
    CHECK_FALSE(resnet->imagenet_stem());
    CHECK(model->num_parameters() == expected_parameters(model_spec(name), 3, 100, false));
  }
  Generator gen(3);
  // Reference figures for CIFAR-100 (3x32x32, 100 classes).
  CHECK(make_model("resnet18", cifar100, gen)->num_parameters() == 11'220'132);
  CHECK(make_model("resnet10", cifar100, gen)->num_parameters() == 4'949'412);
  CHECK(make_model("resnet50", cifar100, gen)->num_parameters() == 23'705'252);
  // The ImageNet stem (7x7 conv) changes only the stem's count.
  auto big = make_model("resnet10_m", {3, 200, 64}, gen);
  CHECK(big->num_parameters() == expected_parameters(model_spec("resnet10_m"), 3, 200, true));
}

TEST_CASE("ResNet output and feature shapes for 28, 32 and 64 pixel inputs", "[resnet]") {
  Generator gen(4);
  {
    auto model = std::dynamic_pointer_cast<ResNet>(make_model("resnet10_xxxs", {1, 10, 28}, gen));
    REQUIRE(model != nullptr);
    const Tensor x = Tensor::randn({2, 1, 28, 28}, gen);
    CHECK(model->forward(x).shape() == Shape{2, 10});
    CHECK(model->forward_features(x).shape() == Shape{2, 16});
    CHECK_THROWS_WITH(model->forward(Tensor::randn({2, 3, 28, 28}, gen)),
                      Catch::Contains("expected an input (N, 1, H, W)"));
  }
  {
    auto model = std::dynamic_pointer_cast<ResNet>(make_model("resnet10_s", {3, 100, 32}, gen));
    const Tensor x = Tensor::randn({3, 3, 32, 32}, gen);
    CHECK(model->forward(x).shape() == Shape{3, 100});
    const Tensor f = model->forward_features(x);
    CHECK(f.shape() == Shape{3, 64});
    CHECK(model->feature_dim() == 64);
    // Pooled ReLU outputs are non-negative, and forward is fc applied to them.
    for (double v : f.to_doubles())
      CHECK(v >= 0.0);
    model->eval();
    const auto logits = model->forward(x).to_doubles();
    const auto via_fc = model->fc()->forward(model->forward_features(x)).to_doubles();
    CHECK(logits == via_fc);
  }
  {
    auto model = std::dynamic_pointer_cast<ResNet>(make_model("resnet10_xs", {3, 10, 64}, gen));
    CHECK(model->imagenet_stem());
    const StateDict s = model->state_dict();
    CHECK(s.at("conv1.weight").shape() == Shape{8, 3, 7, 7});
    const Tensor x = Tensor::randn({2, 3, 64, 64}, gen);
    CHECK(model->forward(x).shape() == Shape{2, 10});
    CHECK(model->forward_features(x).shape() == Shape{2, 32});
  }
  {
    // Bottleneck blocks: conv3 / bn3 keys and features of width[3] * 4.
    ResNet model({BlockKind::Bottleneck, {1, 2, 1, 1}, {4, 4, 8, 8}}, {3, 7, 32}, gen);
    const StateDict s = model.state_dict();
    CHECK(s.at("layer1.0.conv1.weight").shape() == Shape{4, 4, 1, 1});
    CHECK(s.at("layer1.0.conv3.weight").shape() == Shape{16, 4, 1, 1});
    CHECK(s.at("layer1.0.bn3.running_mean").shape() == Shape{16});
    CHECK(s.at("layer1.0.downsample.0.weight").shape() == Shape{16, 4, 1, 1});
    CHECK(s.at("layer2.0.conv2.weight").shape() == Shape{4, 4, 3, 3});
    CHECK(s.at("layer2.0.downsample.0.weight").shape() == Shape{16, 16, 1, 1});
    CHECK_FALSE(s.contains("layer2.1.downsample.0.weight"));
    CHECK(s.at("fc.weight").shape() == Shape{7, 32});
    CHECK(model.num_parameters() == expected_parameters(model.spec(), 3, 7, false));
    const Tensor x = Tensor::randn({2, 3, 16, 16}, gen);
    CHECK(model.forward(x).shape() == Shape{2, 7});
    CHECK(model.forward_features(x).shape() == Shape{2, 32});
  }
}

TEST_CASE("the registry lists its models and rejects unknown names", "[registry]") {
  const auto names = resnet_model_names();
  const std::vector<std::string> expected{
      "resnet10_xxxs", "resnet10_xxs", "resnet10_xs", "resnet10_s", "resnet10_m",
      "resnet10_l",    "resnet10",     "resnet18",    "resnet34",   "resnet50"};
  CHECK(names == expected);
  CHECK(model_spec("resnet10_xxs").widths == std::array<std::int64_t, 4>{8, 8, 16, 16});
  CHECK(model_spec("resnet34").blocks == std::array<std::int64_t, 4>{3, 4, 6, 3});
  CHECK(model_spec("resnet50").block == BlockKind::Bottleneck);
  Generator gen(5);
  try {
    make_model("resnet11", {}, gen);
    FAIL("an unknown model name was accepted");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("'resnet11'"));
    for (const auto& n : expected)
      CHECK_THAT(msg, Catch::Contains(n));
  }
  CHECK_THROWS_WITH(make_model("resnet10_s", {3, -1, 32}, gen), Catch::Contains("num_classes -1"));
}

TEST_CASE("a ResNet with num_classes 0 is a headless feature extractor", "[resnet]") {
  for (const auto& name : resnet_model_names()) {
    INFO("model " << name);
    Generator gen(11);
    auto model = std::dynamic_pointer_cast<ResNet>(make_model(name, {3, 0, 32}, gen));
    REQUIRE(model != nullptr);
    CHECK(model->headless());
    CHECK(model->fc() == nullptr);
    // Exactly the classifier's parameters are missing, and no key mentions fc.
    const std::int64_t features = model->feature_dim();
    CHECK(model->num_parameters() ==
          expected_parameters(model_spec(name), 3, 100, false) - (features * 100 + 100));
    for (const auto& [key, value] : model->state_dict())
      CHECK(key.find("fc") == std::string::npos);
  }
  Generator gen(12);
  auto model = std::dynamic_pointer_cast<ResNet>(make_model("resnet10_xxxs", {1, 0, 28}, gen));
  const Tensor x = Tensor::randn({2, 1, 28, 28}, gen);
  CHECK(model->forward_features(x).shape() == Shape{2, 16});
  try {
    model->forward(x);
    FAIL("forward() of a headless ResNet did not throw");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("headless") && Catch::Contains("num_classes 0") &&
                        Catch::Contains("no fc") && Catch::Contains("forward_features"));
  }
  // The same generator draws the same trunk with or without a classifier.
  Generator g1(13), g2(13);
  auto with_fc = make_model("resnet10_xs", {3, 10, 32}, g1);
  auto headless = make_model("resnet10_xs", {3, 0, 32}, g2);
  const StateDict a = with_fc->state_dict(), b = headless->state_dict();
  CHECK(a.size() == b.size() + 2);
  for (const auto& [key, value] : b) {
    INFO("key " << key);
    REQUIRE(a.contains(key));
    CHECK(a.at(key).to_doubles() == value.to_doubles());
  }
}

TEST_CASE("float64 derivatives of residual blocks in training and eval mode", "[grad]") {
  Generator gen(6);
  // Non-contiguous NCHW input: an NHWC tensor viewed as NCHW.
  const Tensor x = random_tensor({2, 5, 5, 3}, gen).permute({0, 3, 1, 2});
  REQUIRE_FALSE(x.is_contiguous());

  auto projection = std::make_shared<BasicBlock>(3, 4, 2, gen);  // 1x1 conv + bn shortcut
  projection->to(DType::Float64);
  REQUIRE(projection->has_downsample());
  const auto run_projection = [&](const V& v) { return projection->forward(v[0]); };
  check_gradients("basic_block_downsample_train", run_projection, {x});
  projection->eval();
  check_gradients("basic_block_downsample_eval", run_projection, {x});

  auto identity = std::make_shared<BasicBlock>(3, 3, 1, gen);
  identity->to(DType::Float64);
  REQUIRE_FALSE(identity->has_downsample());
  check_gradients("basic_block_identity_train", [&](const V& v) { return identity->forward(v[0]); },
                  {x});

  auto bottleneck = std::make_shared<Bottleneck>(3, 2, 2, gen);
  bottleneck->to(DType::Float64);
  check_gradients("bottleneck_train", [&](const V& v) { return bottleneck->forward(v[0]); }, {x});

  // Each block ends in one fused op: batch norm, the shortcut's add and the ReLU.
  for (nn::Module* block :
       std::vector<nn::Module*>{projection.get(), identity.get(), bottleneck.get()}) {
    block->train();
    const Tensor y = block->forward(x);
    REQUIRE(y.grad_fn() != nullptr);
    CHECK(y.grad_fn()->name == "batch_norm_add_relu");
  }
}

TEST_CASE("float64 derivatives of a whole ResNet w.r.t. input and parameters", "[grad]") {
  Generator gen(7);
  auto model = std::dynamic_pointer_cast<ResNet>(make_model("resnet10_xxxs", {3, 5, 32}, gen));
  model->to(DType::Float64);
  const Tensor x = random_tensor({3, 3, 8, 8}, gen);
  check_gradients("resnet10_xxxs_input", [&](const V& v) { return model->forward(v[0]); }, {x});
  check_gradients("resnet10_xxxs_features",
                  [&](const V& v) { return model->forward_features(v[0]); }, {x});

  // Parameter tangents, as the meta-gradient uses them: the JVP against central
  // differences along the tangent, and <u, J v> = <J^T u, v> against reverse mode.
  check_parameter_derivatives(
      model->parameters(), [&] { return model->forward(x); }, gen);
}

TEST_CASE("one gradient step on resnet10_xxxs lowers the cross-entropy", "[resnet]") {
  Generator gen(8);
  auto model = make_model("resnet10_xxxs", {3, 10, 32}, gen);
  const Tensor x = Tensor::randn({16, 3, 32, 32}, gen);
  std::vector<std::int64_t> y;
  for (int i = 0; i < 16; ++i)
    y.push_back(static_cast<std::int64_t>(gen.below(10)));
  const Tensor labels = Tensor::from_vector(y, {16});

  const Tensor loss0 = mean(cross_entropy(model->forward(x), labels));
  loss0.backward();
  double grad_norm2 = 0;
  for (const auto& [name, p] : model->named_parameters()) {
    INFO("parameter " << name);
    REQUIRE(p.grad().defined());
    REQUIRE(p.grad().shape() == p.shape());
    grad_norm2 += dot(p.grad(), p.grad());
  }
  REQUIRE(grad_norm2 > 0);
  for (auto& p : model->parameters()) {
    p.add_(p.grad(), -0.05);
    p.zero_grad();
  }
  const Tensor loss1 = mean(cross_entropy(model->forward(x), labels));
  INFO("loss before " << loss0.item() << ", after " << loss1.item());
  CHECK(loss1.item() < loss0.item());
}
