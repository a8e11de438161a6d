// Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016) as RepDistiller's wrn.py: pre-activation
// blocks, widths [16, 16k, 32k, 64k], n = (depth - 4) / 6 blocks per stage, strides 1, 2, 2,
// a final bn + relu, global average pooling and a linear classifier.
#pragma once
#include <array>
#include <cstdint>
#include <memory>

#include <mcd/engine/generator.h>
#include <mcd/models/layers.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>

namespace mcd::nn {

struct WideResNetSpec {
  std::int64_t depth = 16;  // 6n + 4, n >= 1
  std::int64_t widen_factor = 1;
};

// bn1-relu-conv1(3x3, stride)-bn2-relu-conv2(3x3). When in != out the shortcut is a 1x1
// `convShortcut` applied to the activated input relu(bn1(x)); otherwise it is x itself.
class WideBasicBlock : public Module {
 public:
  WideBasicBlock(std::int64_t in_planes, std::int64_t out_planes, std::int64_t stride,
                 Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, out, H/s, W/s)
  bool has_shortcut_conv() const { return shortcut_ != nullptr; }

 private:
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Conv2d> conv1_, conv2_, shortcut_;
};

// State-dict names follow RepDistiller: conv1, block{1,2,3}.layer.i.{bn1,conv1,bn2,conv2,
// convShortcut}, bn1, fc.
class WideResNet : public Module {
 public:
  WideResNet(const WideResNetSpec& spec, const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, num_classes)
  Tensor forward_features(const Tensor& x);  // (N, C, H, W) -> (N, feature_dim())

  std::int64_t blocks_per_stage() const { return (spec_.depth - 4) / 6; }
  std::array<std::int64_t, 4> widths() const;
  std::int64_t feature_dim() const { return 64 * spec_.widen_factor; }
  const WideResNetSpec& spec() const { return spec_; }

 private:
  WideResNetSpec spec_;
  ModelConfig config_;
  std::shared_ptr<Conv2d> conv1_;
  std::array<std::shared_ptr<Module>, 3> stages_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace mcd::nn
