// Residual blocks and the ResNet family with torchvision's state-dict names (conv1, bn1,
// layer1.0.conv1, layer2.0.downsample.0, fc). The stem is CIFAR-style (3x3 conv, no max
// pool) for inputs up to 32 pixels and ImageNet-style (7x7 stride 2 + 3x3 max pool) above.
#pragma once
#include <array>
#include <cstdint>
#include <memory>

#include <mcd/engine/generator.h>
#include <mcd/models/layers.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>

namespace mcd::nn {

// conv3x3-bn-relu-conv3x3-bn plus the shortcut, then relu. The shortcut is a 1x1 conv with
// the block's stride and a bn (`downsample.0`, `downsample.1`) when the shape changes.
class BasicBlock : public Module {
 public:
  static constexpr std::int64_t expansion = 1;
  BasicBlock(std::int64_t in_planes, std::int64_t planes, std::int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, planes, H/s, W/s)
  bool has_downsample() const { return downsample_ != nullptr; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;
};

// 1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand to 4 * planes.
class Bottleneck : public Module {
 public:
  static constexpr std::int64_t expansion = 4;
  Bottleneck(std::int64_t in_planes, std::int64_t planes, std::int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, 4 * planes, H/s, W/s)
  bool has_downsample() const { return downsample_ != nullptr; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> downsample_;
};

enum class BlockKind { Basic, Bottleneck };

// Four stages with strides 1, 2, 2, 2; the stem has widths[0] channels.
struct ResNetSpec {
  BlockKind block = BlockKind::Basic;
  std::array<std::int64_t, 4> blocks{1, 1, 1, 1};
  std::array<std::int64_t, 4> widths{64, 128, 256, 512};
};

std::int64_t block_expansion(BlockKind kind);

class ResNet : public Module {
 public:
  // config.num_classes == 0 builds a headless feature extractor: no fc is registered and
  // forward() throws; forward_features() works either way.
  ResNet(const ResNetSpec& spec, const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, num_classes) logits
  // The pooled, flattened features that fc reads: (N, C, H, W) -> (N, feature_dim()).
  Tensor forward_features(const Tensor& x);

  std::int64_t feature_dim() const { return feature_dim_; }  // widths[3] * expansion
  const ResNetSpec& spec() const { return spec_; }
  const ModelConfig& config() const { return config_; }
  bool imagenet_stem() const { return maxpool_ != nullptr; }
  bool headless() const { return fc_ == nullptr; }
  const std::shared_ptr<Linear>& fc() const { return fc_; }  // null when headless

 private:
  ResNetSpec spec_;
  ModelConfig config_;
  std::int64_t feature_dim_ = 0;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<MaxPool2d> maxpool_;  // ImageNet stem only
  std::array<std::shared_ptr<Sequential>, 4> layers_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace mcd::nn
