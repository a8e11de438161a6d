// The C-Net: a headless registered ResNet ("backbone") and, for the sigmoid head, a Linear
// ("head") to 2K outputs. Every parameter the module owns feeds its output, so none of them
// sits with a zero gradient while Adam's weight decay moves it.
#include <algorithm>
#include <array>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/models/cnet.h>
#include <mcd/models/layers.h>
#include <mcd/models/registry.h>

namespace mcd::nn {
namespace {

constexpr std::array<std::pair<std::string_view, CNetInput>, 2> kInputs{{
    {"image", CNetInput::Image},
    {"image+students", CNetInput::ImageStudents},
}};
constexpr std::array<std::pair<std::string_view, CNetHead>, 2> kHeads{{
    {"sigmoid", CNetHead::Sigmoid},
    {"official", CNetHead::Official},
}};

// Signals per student in the "image+students" input: ce, kl to the teacher, confidence.
constexpr std::int64_t kSignalsPerStudent = 3;

template <class Enum, std::size_t N>
Enum parse_name(const char* what, const std::string& name,
                const std::array<std::pair<std::string_view, Enum>, N>& table) {
  for (const auto& [n, value] : table)
    if (n == name) return value;
  std::array<std::string_view, N> names{};
  for (std::size_t i = 0; i < N; ++i)
    names[i] = table[i].first;
  fail("CNet: unknown {} '{}'; valid names: {}", what, name, fmt::join(names, ", "));
}

template <class Enum, std::size_t N>
std::string name_of(Enum value, const std::array<std::pair<std::string_view, Enum>, N>& table) {
  for (const auto& [n, v] : table)
    if (v == value) return std::string(n);
  fail("CNet: invalid enumerator {}", static_cast<int>(value));
}

// Validates the configuration before any parameter is drawn from the generator.
void check_config(const CNetConfig& c) {
  MCD_CHECK(c.num_students >= 1, "CNet: num_students must be >= 1, got {}", c.num_students);
  MCD_CHECK(c.image.in_channels > 0 && c.image.input_size > 0,
            "CNet: invalid image config in_channels {}, input_size {}", c.image.in_channels,
            c.image.input_size);
  const auto names = resnet_model_names();
  MCD_CHECK(std::find(names.begin(), names.end(), c.backbone) != names.end(),
            "CNet: unknown backbone '{}'; known models: {}", c.backbone, fmt::join(names, ", "));
  MCD_CHECK(!(c.input == CNetInput::ImageStudents && c.head == CNetHead::Official),
            "CNet: input 'image+students' cannot be combined with the 'official' head (the "
            "released code has no such variant); use the 'sigmoid' head");
}

}  // namespace

CNetInput parse_cnet_input(const std::string& name) {
  return parse_name("input", name, kInputs);
}

CNetHead parse_cnet_head(const std::string& name) {
  return parse_name("head", name, kHeads);
}

std::string to_string(CNetInput input) {
  return name_of(input, kInputs);
}

std::string to_string(CNetHead head) {
  return name_of(head, kHeads);
}

CNet::CNet(const CNetConfig& config, Generator& gen) : config_(config) {
  check_config(config_);
  const std::int64_t outputs = 2 * config_.num_students;
  const ModelConfig headless{config_.image.in_channels, 0, config_.image.input_size};
  backbone_ = register_module(
      "backbone", std::make_shared<ResNet>(model_spec(config_.backbone), headless, gen));
  const std::int64_t width = backbone_->feature_dim();

  if (config_.head == CNetHead::Official) {
    MCD_CHECK(outputs <= width,
              "CNet: the 'official' head reads alpha_k, beta_k from the first 2K = {} pooled "
              "feature channels, but backbone '{}' has width {} (K = {} students)",
              outputs, config_.backbone, width, config_.num_students);
    return;
  }
  const std::int64_t in_features =
      width +
      (config_.input == CNetInput::ImageStudents ? kSignalsPerStudent * config_.num_students : 0);
  head_ = register_module("head", std::make_shared<Linear>(in_features, outputs, gen));
}

Tensor CNet::forward(const Tensor& images) {
  MCD_CHECK(config_.input == CNetInput::Image,
            "CNet: forward(images) serves the 'image' input only; the 'image+students' input "
            "needs weights(images, student_signals) with signals (B, {})",
            kSignalsPerStudent * config_.num_students);
  return weights(images, Tensor());
}

Tensor CNet::weights(const Tensor& images, const Tensor& student_signals) {
  check_defined("CNet", images);
  check_floating("CNet", images);
  MCD_CHECK(images.dim() == 4 && images.size(0) > 0 && images.size(1) == config_.image.in_channels,
            "CNet: expected images (B, {}, H, W) with B >= 1, got shape {}",
            config_.image.in_channels, shape_str(images.shape()));
  const std::int64_t batch = images.size(0);

  Tensor features = backbone_->forward_features(images);  // (B, width), ReLU then pooled
  if (config_.head == CNetHead::Official) return features.slice(1, 0, 2 * config_.num_students);

  if (config_.input == CNetInput::ImageStudents) {
    const std::int64_t signals = kSignalsPerStudent * config_.num_students;
    MCD_CHECK(student_signals.defined(),
              "CNet: the 'image+students' input needs student signals (B, {}) = ({}, {})", signals,
              batch, signals);
    MCD_CHECK(student_signals.dim() == 2 && student_signals.size(0) == batch &&
                  student_signals.size(1) == signals,
              "CNet: expected student signals (B, 3K) = ({}, {}) for images of shape {}, got "
              "shape {}",
              batch, signals, shape_str(images.shape()), shape_str(student_signals.shape()));
    MCD_CHECK(student_signals.dtype() == images.dtype(),
              "CNet: student signals have dtype {}, but the images have dtype {}",
              dtype_name(student_signals.dtype()), dtype_name(images.dtype()));
    features = concat({features, student_signals}, 1);  // (B, width + 3K)
  }
  return sigmoid(head_->forward(features));
}

}  // namespace mcd::nn
