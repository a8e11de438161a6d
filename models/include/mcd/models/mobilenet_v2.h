// MobileNetV2 (Sandler et al. 2018), CIFAR variant as RepDistiller's mobilenetv2.py: a 3x3
// stride-2 stem, seven inverted-residual stages with total stride 16, a 1x1 conv to 1280
// channels, global average pooling and a linear classifier. Activations are ReLU, as there.
#pragma once
#include <array>
#include <cstdint>
#include <memory>

#include <mcd/engine/generator.h>
#include <mcd/models/layers.h>
#include <mcd/models/model_config.h>
#include <mcd/models/module.h>

namespace mcd::nn {

// Channels are int(c * width_mult), truncated as the reference does (mobile_half: 0.5).
struct MobileNetV2Spec {
  std::int64_t expansion = 6;  // T, for every stage but the first (which expands by 1)
  double width_mult = 1.0;
};

// One row of the inverted-residual table: expansion t, channels c, blocks n, stride s.
struct InvertedResidualStage {
  std::int64_t t, c, n, s;
};
std::array<InvertedResidualStage, 7> mobilenet_v2_stages(std::int64_t expansion);
std::int64_t mobilenet_v2_channels(std::int64_t c, double width_mult);  // int(c * width)
std::int64_t mobilenet_v2_last_channel(double width_mult);

// conv: pw 1x1 (in -> in * t), bn, relu, dw 3x3 (stride), bn, relu, pw-linear 1x1, bn, as
// `conv.0` .. `conv.7`; the expansion conv is kept even for t = 1, as in the reference. The
// residual is added when stride == 1 and in == out.
class InvertedResidual : public Module {
 public:
  InvertedResidual(std::int64_t in, std::int64_t out, std::int64_t stride, std::int64_t expansion,
                   Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in, H, W) -> (N, out, H/s, W/s)
  bool uses_residual() const { return residual_; }

 private:
  std::shared_ptr<Sequential> conv_;
  bool residual_;
};

// State-dict names: conv1.{0,1}, blocks.i.j.conv.k, conv2.{0,1}, classifier.0.
class MobileNetV2 : public Module {
 public:
  MobileNetV2(const MobileNetV2Spec& spec, const ModelConfig& config, Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C, H, W) -> (N, num_classes)
  Tensor forward_features(const Tensor& x);  // (N, C, H, W) -> (N, feature_dim())

  std::int64_t feature_dim() const { return last_channel_; }
  const MobileNetV2Spec& spec() const { return spec_; }

 private:
  MobileNetV2Spec spec_;
  ModelConfig config_;
  std::int64_t last_channel_ = 0;
  std::shared_ptr<Sequential> conv1_, blocks_, conv2_, classifier_;
};

}  // namespace mcd::nn
