// The CIFAR ResNets of He et al. (2016) as the KD literature uses them (RepDistiller's
// resnet.py): a 3x3 stem, three stages of n = (depth - 2) / 6 BasicBlocks with strides 1, 2, 2
// and 1x1 conv + bn projection shortcuts wherever the shape changes; global average pooling.
#pragma once
#include <array>
#include <cstdint>
#include <memory>

#include <mcd/engine/generator.h>
#include <mcd/models/layers.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>
#include <mcd/models/resnet.h>

namespace mcd::nn {

// widths: the stem, then the three stages ([16, 16, 32, 64] for resnet20 .. resnet110,
// [32, 64, 128, 256] for the x4 variants). depth = 6n + 2 with n >= 1.
struct CifarResNetSpec {
  std::int64_t depth = 20;
  std::array<std::int64_t, 4> widths{16, 16, 32, 64};
};

// State-dict names follow RepDistiller: conv1, bn1, layer{1,2,3}.i.{conv1,bn1,conv2,bn2,
// downsample.0,downsample.1}, fc. Spatial strides are 1, 1, 2, 2 whatever the input size.
class CifarResNet : public Module {
 public:
  CifarResNet(const CifarResNetSpec& spec, const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, num_classes)
  Tensor forward_features(const Tensor& x);  // (N, C, H, W) -> (N, feature_dim())

  std::int64_t blocks_per_stage() const { return (spec_.depth - 2) / 6; }
  std::int64_t feature_dim() const { return spec_.widths[3]; }
  const CifarResNetSpec& spec() const { return spec_; }
  const ModelConfig& config() const { return config_; }

 private:
  CifarResNetSpec spec_;
  ModelConfig config_;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::array<std::shared_ptr<Sequential>, 3> layers_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace mcd::nn
