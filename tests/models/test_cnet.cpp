// The C-Net: output shapes and ranges of every valid variant, the official head as a slice of
// the backbone's pooled features, state-dict names (backbone.*, head.*, never fc), rejected
// variants and inputs, and float64 derivatives w.r.t. images, student signals and parameters.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/engine/autograd.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"

using namespace mcd;
using namespace mcd::nn;
using Catch::Contains;
using mcd::testing::check_gradients;
using mcd::testing::check_parameter_derivatives;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

CNetConfig make_config(CNetInput input, CNetHead head, std::int64_t k,
                       const std::string& backbone = "resnet10_s") {
  CNetConfig c;
  c.input = input;
  c.head = head;
  c.num_students = k;
  c.backbone = backbone;
  c.image = {3, 10, 32};  // num_classes is irrelevant: the backbone is always headless
  return c;
}

std::shared_ptr<ResNet> backbone_of(const CNet& net) {
  for (const auto& [name, child] : net.named_children())
    if (name == "backbone") return std::dynamic_pointer_cast<ResNet>(child);
  return nullptr;
}

// Runs `f` and returns the message of the Error it throws (fails the test if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("no error was thrown");
  return {};
}

double dot(const Tensor& a, const Tensor& b) {
  const auto va = a.to_doubles(), vb = b.to_doubles();
  double s = 0;
  for (std::size_t i = 0; i < va.size(); ++i)
    s += va[i] * vb[i];
  return s;
}

}  // namespace

TEST_CASE("C-Net variant names parse, print and list the valid names on error", "[cnet]") {
  CHECK(parse_cnet_input("image") == CNetInput::Image);
  CHECK(parse_cnet_input("image+students") == CNetInput::ImageStudents);
  CHECK(parse_cnet_head("sigmoid") == CNetHead::Sigmoid);
  CHECK(parse_cnet_head("official") == CNetHead::Official);
  for (auto in : {CNetInput::Image, CNetInput::ImageStudents})
    CHECK(parse_cnet_input(to_string(in)) == in);
  for (auto head : {CNetHead::Sigmoid, CNetHead::Official})
    CHECK(parse_cnet_head(to_string(head)) == head);

  const std::string bad_input = error_of([] { parse_cnet_input("images"); });
  CHECK_THAT(bad_input, Contains("CNet") && Contains("input") && Contains("'images'") &&
                            Contains("image, image+students"));
  const std::string bad_head = error_of([] { parse_cnet_head("linear"); });
  CHECK_THAT(bad_head, Contains("head") && Contains("'linear'") && Contains("sigmoid, official"));
}

TEST_CASE("every valid C-Net variant gives (B, 2K) weights in its range", "[cnet]") {
  Generator gen(21);
  const std::int64_t batch = 5;
  const Tensor images = Tensor::randn({batch, 3, 16, 16}, gen);
  for (std::int64_t k : {1, 3}) {
    INFO("K = " << k);
    {
      CNet net(make_config(CNetInput::Image, CNetHead::Sigmoid, k), gen);
      const Tensor w = net.forward(images);
      CHECK(w.shape() == Shape{batch, 2 * k});
      for (double v : w.to_doubles()) {
        CHECK(v > 0.0);
        CHECK(v < 1.0);
      }
      // For the image input, weights() ignores the signals.
      CHECK(net.weights(images, Tensor()).to_doubles() == w.to_doubles());
    }
    {
      CNet net(make_config(CNetInput::ImageStudents, CNetHead::Sigmoid, k), gen);
      const Tensor signals = Tensor::randn({batch, 3 * k}, gen);
      const Tensor w = net.weights(images, signals);
      CHECK(w.shape() == Shape{batch, 2 * k});
      for (double v : w.to_doubles()) {
        CHECK(v > 0.0);
        CHECK(v < 1.0);
      }
      // The signals reach the head: changing them changes the weights.
      const Tensor other = Tensor::randn({batch, 3 * k}, gen);
      CHECK(net.weights(images, other).to_doubles() != w.to_doubles());
    }
    {
      CNet net(make_config(CNetInput::Image, CNetHead::Official, k), gen);
      const Tensor w = net.forward(images);
      CHECK(w.shape() == Shape{batch, 2 * k});
      // Column j of the weights is channel j of the pooled ReLU features. BatchNorm runs in
      // training mode, so the features of the same batch are the same again.
      auto backbone = backbone_of(net);
      REQUIRE(backbone != nullptr);
      const Tensor f = backbone->forward_features(images);
      REQUIRE(f.shape() == Shape{batch, 64});
      const auto wv = w.to_doubles(), fv = f.to_doubles();
      bool any_positive = false;
      for (std::int64_t i = 0; i < batch; ++i) {
        for (std::int64_t j = 0; j < 2 * k; ++j) {
          const double v = wv[static_cast<std::size_t>(i * 2 * k + j)];
          CHECK(v >= 0.0);
          CHECK(v == fv[static_cast<std::size_t>(i * 64 + j)]);
          any_positive = any_positive || v > 0.0;
        }
      }
      CHECK(any_positive);
    }
  }
  // The release keeps BatchNorm in training mode; eval mode works too and uses running stats.
  CNet net(make_config(CNetInput::Image, CNetHead::Sigmoid, 2), gen);
  CHECK(net.is_training());
  net.eval();
  const Tensor w = net.forward(images);
  CHECK(w.shape() == Shape{batch, 4});
  // Running statistics make a sample's weights independent of the rest of its batch.
  const auto alone = net.forward(images.slice(0, 0, 1)).to_doubles();
  const auto in_batch = w.to_doubles();
  REQUIRE(alone.size() == 4);
  for (std::size_t j = 0; j < alone.size(); ++j)
    CHECK(alone[j] == Approx(in_batch[j]).margin(1e-6));
}

TEST_CASE("C-Net state-dict keys: backbone.*, head.* and no classifier", "[cnet]") {
  Generator gen(22);
  const std::int64_t k = 3;
  {
    CNet net(make_config(CNetInput::Image, CNetHead::Sigmoid, k), gen);
    const StateDict s = net.state_dict();
    CHECK(s.at("backbone.conv1.weight").shape() == Shape{8, 3, 3, 3});
    CHECK(s.at("backbone.layer1.0.bn1.running_mean").shape() == Shape{8});
    CHECK(s.at("backbone.layer4.0.downsample.0.weight").shape() == Shape{64, 32, 1, 1});
    CHECK(s.at("head.weight").shape() == Shape{2 * k, 64});
    CHECK(s.at("head.bias").shape() == Shape{2 * k});
    for (const auto& [key, value] : s) {
      INFO("key " << key);
      CHECK((key.rfind("backbone.", 0) == 0 || key == "head.weight" || key == "head.bias"));
      CHECK(key.find("fc") == std::string::npos);
    }
    // PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    const double bound = 1.0 / std::sqrt(64.0);
    for (const char* key : {"head.weight", "head.bias"})
      for (double v : s.at(key).to_doubles())
        CHECK(std::abs(v) <= bound);
    // The backbone is resnet10_s less its classifier, plus the head.
    Generator g(1);
    const std::int64_t with_fc = make_model("resnet10_s", {3, 10, 32}, g)->num_parameters();
    CHECK(net.num_parameters() == with_fc - (64 * 10 + 10) + (64 * 2 * k + 2 * k));
  }
  {
    CNet net(make_config(CNetInput::ImageStudents, CNetHead::Sigmoid, k), gen);
    const StateDict s = net.state_dict();
    CHECK(s.at("head.weight").shape() == Shape{2 * k, 64 + 3 * k});
    CHECK(s.at("head.bias").shape() == Shape{2 * k});
  }
  {
    // The official head owns no parameters of its own: only the backbone.
    CNet net(make_config(CNetInput::Image, CNetHead::Official, k), gen);
    for (const auto& [key, value] : net.state_dict()) {
      INFO("key " << key);
      CHECK(key.rfind("backbone.", 0) == 0);
      CHECK(key.find("fc") == std::string::npos);
    }
    Generator g(1);
    const std::int64_t with_fc = make_model("resnet10_s", {3, 10, 32}, g)->num_parameters();
    CHECK(net.num_parameters() == with_fc - (64 * 10 + 10));
  }
  {
    // Backbone keys follow the backbone's architecture and the image config.
    CNetConfig c = make_config(CNetInput::Image, CNetHead::Sigmoid, 1, "resnet10_xxxs");
    c.image = {1, 0, 28};
    CNet net(c, gen);
    const StateDict s = net.state_dict();
    CHECK(s.at("backbone.conv1.weight").shape() == Shape{4, 1, 3, 3});
    CHECK(s.at("head.weight").shape() == Shape{2, 16});
    CHECK(net.forward(Tensor::randn({2, 1, 28, 28}, gen)).shape() == Shape{2, 2});
  }
}

TEST_CASE("invalid C-Net variants and inputs are rejected with clear errors", "[cnet]") {
  Generator gen(23);
  const auto build = [&](const CNetConfig& c) { return error_of([&] { CNet net(c, gen); }); };

  CHECK_THAT(build(make_config(CNetInput::Image, CNetHead::Sigmoid, 0)),
             Contains("CNet") && Contains("num_students must be >= 1, got 0"));
  CHECK_THAT(build(make_config(CNetInput::ImageStudents, CNetHead::Official, 2)),
             Contains("CNet") && Contains("'image+students'") && Contains("'official'"));
  // resnet10_xxxs has 16 pooled channels: 2K = 18 does not fit, 2K = 16 does.
  CHECK_THAT(build(make_config(CNetInput::Image, CNetHead::Official, 9, "resnet10_xxxs")),
             Contains("CNet") && Contains("2K = 18") && Contains("'resnet10_xxxs'") &&
                 Contains("width 16") && Contains("K = 9"));
  CHECK_NOTHROW(CNet(make_config(CNetInput::Image, CNetHead::Official, 8, "resnet10_xxxs"), gen));
  CHECK_THAT(build(make_config(CNetInput::Image, CNetHead::Sigmoid, 1, "resnet7")),
             Contains("CNet") && Contains("unknown backbone 'resnet7'") && Contains("resnet10_s") &&
                 Contains("resnet50"));
  CNetConfig bad_image = make_config(CNetInput::Image, CNetHead::Sigmoid, 1);
  bad_image.image.in_channels = 0;
  CHECK_THAT(build(bad_image), Contains("CNet") && Contains("in_channels 0"));

  const std::int64_t k = 2;
  CNet image_net(make_config(CNetInput::Image, CNetHead::Sigmoid, k, "resnet10_xxxs"), gen);
  CNet student_net(make_config(CNetInput::ImageStudents, CNetHead::Sigmoid, k, "resnet10_xxxs"),
                   gen);
  const Tensor images = Tensor::randn({4, 3, 8, 8}, gen);
  const Tensor signals = Tensor::randn({4, 3 * k}, gen);
  CHECK_THAT(error_of([&] {
               image_net.forward(Tensor::randn({4, 1, 8, 8}, gen));
             }),
             Contains("CNet") && Contains("(B, 3, H, W)") && Contains("[4, 1, 8, 8]"));
  CHECK_THAT(error_of([&] {
               image_net.forward(Tensor::randn({3, 8, 8}, gen));
             }),
             Contains("CNet") && Contains("[3, 8, 8]"));
  CHECK_THAT(error_of([&] { image_net.forward(Tensor()); }), Contains("CNet"));
  CHECK_THAT(error_of([&] { student_net.forward(images); }),
             Contains("CNet") && Contains("'image+students'") && Contains("(B, 6)"));
  CHECK_THAT(error_of([&] { student_net.weights(images, Tensor()); }),
             Contains("CNet") && Contains("needs student signals") && Contains("(4, 6)"));
  CHECK_THAT(
      error_of([&] {
        student_net.weights(images, Tensor::randn({4, 5}, gen));
      }),
      Contains("CNet") && Contains("(4, 6)") && Contains("[4, 3, 8, 8]") && Contains("[4, 5]"));
  CHECK_THAT(error_of([&] {
               student_net.weights(images, Tensor::randn({3, 6}, gen));
             }),
             Contains("[3, 6]"));
  CHECK_THAT(error_of([&] {
               student_net.weights(images, signals.reshape({4, 3, 2}));
             }),
             Contains("[4, 3, 2]"));
  CHECK_THAT(error_of([&] { student_net.weights(images, signals.to(DType::Float64)); }),
             Contains("CNet") && Contains("float64") && Contains("float32"));
  // The valid call still works after all of that.
  CHECK(student_net.weights(images, signals).shape() == Shape{4, 2 * k});
}

TEST_CASE("float64 derivatives of C-Net weights w.r.t. images and student signals", "[grad]") {
  Generator gen(24);
  const std::int64_t k = 2;
  CNet net(make_config(CNetInput::ImageStudents, CNetHead::Sigmoid, k, "resnet10_xxxs"), gen);
  net.to(DType::Float64);
  REQUIRE(net.is_training());
  // Non-contiguous images (NHWC viewed as NCHW) and signals (a transposed matrix).
  const Tensor images = random_tensor({3, 8, 8, 3}, gen).permute({0, 3, 1, 2});
  const Tensor signals = random_tensor({3 * k, 3}, gen).transpose(0, 1);
  REQUIRE_FALSE(images.is_contiguous());
  REQUIRE_FALSE(signals.is_contiguous());
  check_gradients("cnet_image_students_sigmoid",
                  [&](const V& v) { return net.weights(v[0], v[1]); }, {images, signals});

  CNet official(make_config(CNetInput::Image, CNetHead::Official, k, "resnet10_xxxs"), gen);
  official.to(DType::Float64);
  check_gradients("cnet_image_official", [&](const V& v) { return official.forward(v[0]); },
                  {images});
}

TEST_CASE("C-Net parameter tangents: JVP against differences and reverse mode", "[grad]") {
  Generator gen(25);
  const std::int64_t k = 2;
  CNet net(make_config(CNetInput::ImageStudents, CNetHead::Sigmoid, k, "resnet10_xxxs"), gen);
  net.to(DType::Float64);
  const Tensor images = random_tensor({3, 3, 8, 8}, gen);
  const Tensor signals = random_tensor({3, 3 * k}, gen);
  const auto run = [&] { return net.weights(images, signals); };

  const auto params = net.parameters();
  REQUIRE(params.size() == net.named_parameters().size());
  REQUIRE(run().shape() == Shape{3, 2 * k});
  // Every parameter, the head's included, gets a nonzero gradient.
  for (const Tensor& g : check_parameter_derivatives(params, run, gen)) {
    REQUIRE(g.defined());
    CHECK(dot(g, g) > 0.0);
  }
}
