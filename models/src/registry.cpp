// The registered architectures, in one explicit table (DESIGN.md §3): the ResNet10 family
// (BasicBlock, one block per stage) by width, ResNet18/34 at ResNet10 widths, and ResNet50.
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mcd/models/registry.h>

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

const Entry& find_entry(const std::string& name) {
  for (const auto& e : kModels)
    if (e.name == name) return e;
  fail("make_model: unknown model '{}'; known models: {}", name, fmt::join(model_names(), ", "));
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& e : kModels)
    names.emplace_back(e.name);
  return names;
}

ResNetSpec model_spec(const std::string& name) {
  return find_entry(name).spec;
}

std::shared_ptr<Module> make_model(const std::string& name, const ModelConfig& config,
                                   Generator& gen) {
  return std::make_shared<ResNet>(find_entry(name).spec, config, gen);
}

}  // namespace mcd::nn
