// The registered architectures, in two explicit tables (DESIGN.md §3): the ResNet family
// (the ResNet10 family by width, ResNet18/34 at ResNet10 widths, ResNet50), then the model
// zoo of the KD literature (CIFAR ResNets, Wide ResNets, MobileNetV2, ShuffleNetV2).
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mcd/models/cifar_resnet.h>
#include <mcd/models/mobilenet_v2.h>
#include <mcd/models/registry.h>
#include <mcd/models/shufflenet_v2.h>
#include <mcd/models/wide_resnet.h>

namespace mcd::nn {
namespace {

struct Entry {
  std::string_view name;
  ResNetSpec spec;
};

constexpr BlockKind kBasic = BlockKind::Basic;
constexpr std::array<std::int64_t, 4> kOnePerStage{1, 1, 1, 1};
constexpr std::array<std::int64_t, 4> kResNet10Widths{64, 128, 256, 512};

constexpr std::array<Entry, 10> kModels{{
    {"resnet10_xxxs", {kBasic, kOnePerStage, {4, 8, 8, 16}}},
    {"resnet10_xxs", {kBasic, kOnePerStage, {8, 8, 16, 16}}},
    {"resnet10_xs", {kBasic, kOnePerStage, {8, 16, 16, 32}}},
    {"resnet10_s", {kBasic, kOnePerStage, {8, 16, 32, 64}}},
    {"resnet10_m", {kBasic, kOnePerStage, {16, 32, 64, 128}}},
    {"resnet10_l", {kBasic, kOnePerStage, {32, 64, 128, 256}}},
    {"resnet10", {kBasic, kOnePerStage, kResNet10Widths}},
    {"resnet18", {kBasic, {2, 2, 2, 2}, kResNet10Widths}},
    {"resnet34", {kBasic, {3, 4, 6, 3}, kResNet10Widths}},
    {"resnet50", {BlockKind::Bottleneck, {3, 4, 6, 3}, kResNet10Widths}},
}};

// ---- the model zoo: one builder per name

using Builder = std::shared_ptr<Module> (*)(const ModelConfig&, Generator&);

struct ZooEntry {
  std::string_view name;
  Builder build;
};

constexpr std::array<std::int64_t, 4> kCifarWidths{16, 16, 32, 64};
constexpr std::array<std::int64_t, 4> kCifarX4Widths{32, 64, 128, 256};

template <std::int64_t Depth, bool X4>
std::shared_ptr<Module> cifar_resnet(const ModelConfig& config, Generator& gen) {
  return std::make_shared<CifarResNet>(CifarResNetSpec{Depth, X4 ? kCifarX4Widths : kCifarWidths},
                                       config, gen);
}

template <std::int64_t Depth, std::int64_t Widen>
std::shared_ptr<Module> wide_resnet(const ModelConfig& config, Generator& gen) {
  return std::make_shared<WideResNet>(WideResNetSpec{Depth, Widen}, config, gen);
}

template <double Width>
std::shared_ptr<Module> mobilenet_v2(const ModelConfig& config, Generator& gen) {
  return std::make_shared<MobileNetV2>(MobileNetV2Spec{6, Width}, config, gen);
}

template <double NetSize>
std::shared_ptr<Module> shufflenet_v2(const ModelConfig& config, Generator& gen) {
  return std::make_shared<ShuffleNetV2>(shufflenet_v2_spec(NetSize), config, gen);
}

constexpr std::array<ZooEntry, 20> kZoo{{
    {"resnet8", cifar_resnet<8, false>},       {"resnet14", cifar_resnet<14, false>},
    {"resnet20", cifar_resnet<20, false>},     {"resnet32", cifar_resnet<32, false>},
    {"resnet44", cifar_resnet<44, false>},     {"resnet56", cifar_resnet<56, false>},
    {"resnet110", cifar_resnet<110, false>},   {"resnet8x4", cifar_resnet<8, true>},
    {"resnet32x4", cifar_resnet<32, true>},    {"wrn_16_1", wide_resnet<16, 1>},
    {"wrn_16_2", wide_resnet<16, 2>},          {"wrn_40_1", wide_resnet<40, 1>},
    {"wrn_40_2", wide_resnet<40, 2>},          {"mobilenetv2", mobilenet_v2<1.0>},
    {"mobilenetv2_x0_75", mobilenet_v2<0.75>}, {"mobilenetv2_x0_5", mobilenet_v2<0.5>},
    {"mobilenetv2_x0_25", mobilenet_v2<0.25>}, {"shufflenetv2", shufflenet_v2<1.0>},
    {"shufflenetv2_x0_5", shufflenet_v2<0.5>}, {"shufflenetv2_x1_5", shufflenet_v2<1.5>},
}};

[[noreturn]] void fail_unknown(const std::string& name) {
  fail("make_model: unknown model '{}'; known models: {}", name, fmt::join(model_names(), ", "));
}

const Entry* find_resnet(const std::string& name) {
  for (const auto& e : kModels)
    if (e.name == name) return &e;
  return nullptr;
}

const ZooEntry* find_zoo(const std::string& name) {
  for (const auto& e : kZoo)
    if (e.name == name) return &e;
  return nullptr;
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names = resnet_model_names();
  for (const auto& e : kZoo)
    names.emplace_back(e.name);
  return names;
}

std::vector<std::string> resnet_model_names() {
  std::vector<std::string> names;
  for (const auto& e : kModels)
    names.emplace_back(e.name);
  return names;
}

ResNetSpec model_spec(const std::string& name) {
  if (const Entry* e = find_resnet(name)) return e->spec;
  if (find_zoo(name) != nullptr)
    fail(
        "model_spec: '{}' is not a ResNet-family model and has no ResNetSpec; ResNet-family "
        "models: {}",
        name, fmt::join(resnet_model_names(), ", "));
  fail_unknown(name);
}

std::shared_ptr<Module> make_model(const std::string& name, const ModelConfig& config,
                                   Generator& gen) {
  if (const Entry* e = find_resnet(name)) return std::make_shared<ResNet>(e->spec, config, gen);
  if (const ZooEntry* z = find_zoo(name)) return z->build(config, gen);
  fail_unknown(name);
}

}  // namespace mcd::nn
