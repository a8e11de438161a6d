// ShuffleNetV2 (Ma et al. 2018), CIFAR variant as RepDistiller's ShuffleNetv2.py: a 1x1
// 24-channel stem without pooling, three stages of one stride-2 DownBlock and n split blocks
// (channel split, branch, concat, channel shuffle), a 1x1 conv, global pooling, a classifier.
#pragma once
#include <array>
#include <cstdint>
#include <memory>

#include <mcd/engine/generator.h>
#include <mcd/models/layers.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>

namespace mcd::nn {

struct ShuffleNetV2Spec {
  std::array<std::int64_t, 4> out_channels{116, 232, 464, 1024};  // stages 1-3, then conv2
  std::array<std::int64_t, 3> num_blocks{3, 7, 3};                // split blocks per stage
};

// The reference's table by net size (0.2, 0.3, 0.5, 1, 1.5, 2); throws for other sizes.
ShuffleNetV2Spec shufflenet_v2_spec(double net_size);

// (N, C, H, W) viewed as (N, g, C/g, H, W), transposed to (N, C/g, g, H, W): interleaves
// the channels of the g groups. C must be divisible by g.
Tensor channel_shuffle(const Tensor& x, std::int64_t groups);

// Splits the channels in half (x1, x2), keeps x1 and maps x2 through 1x1-bn-relu,
// dw3x3-bn, 1x1-bn-relu; concatenates [x1, branch] and shuffles with 2 groups.
class ShuffleSplitBlock : public Module {
 public:
  ShuffleSplitBlock(std::int64_t channels, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, C, H, W)

 private:
  std::int64_t channels_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
};

// Halves the resolution: left dw3x3/2-bn, 1x1-bn-relu (in -> out/2); right 1x1-bn-relu,
// dw3x3/2-bn, 1x1-bn-relu (-> out/2); concatenated and shuffled with 2 groups.
class ShuffleDownBlock : public Module {
 public:
  ShuffleDownBlock(std::int64_t in_channels, std::int64_t out_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, out, ceil(H/2), ceil(W/2))

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_, conv4_, conv5_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_, bn4_, bn5_;
};

// State-dict names: conv1, bn1, layer{1,2,3}.0.{conv1..conv5,bn1..bn5} (DownBlock),
// layer{1,2,3}.i.{conv1..conv3,bn1..bn3}, conv2, bn2, linear.
class ShuffleNetV2 : public Module {
 public:
  ShuffleNetV2(const ShuffleNetV2Spec& spec, const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, num_classes)
  Tensor forward_features(const Tensor& x);  // (N, C, H, W) -> (N, feature_dim())

  std::int64_t feature_dim() const { return spec_.out_channels[3]; }
  const ShuffleNetV2Spec& spec() const { return spec_; }

 private:
  ShuffleNetV2Spec spec_;
  ModelConfig config_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::array<std::shared_ptr<Sequential>, 3> layers_;
  std::shared_ptr<Linear> linear_;
};

}  // namespace mcd::nn
