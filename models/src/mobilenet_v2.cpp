// InvertedResidual and MobileNetV2. Conv-bn-relu triples are Sequentials so that their
// state-dict keys carry PyTorch's indices (the relu at index 2 owns no tensors); Sequential
// runs each bn-relu pair as the fused op.
#include <cmath>

#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/models/mobilenet_v2.h>

namespace mcd::nn {
namespace {

void append_conv_bn(Sequential& s, std::int64_t in, std::int64_t out, std::int64_t kernel,
                    std::int64_t stride, std::int64_t groups, bool with_relu, Generator& gen) {
  s.push_back(std::make_shared<Conv2d>(in, out, kernel, gen, stride, kernel / 2, groups, false));
  s.push_back(std::make_shared<BatchNorm2d>(out));
  if (with_relu) s.push_back(std::make_shared<ReLU>());
}

std::shared_ptr<Sequential> conv_bn_relu(std::int64_t in, std::int64_t out, std::int64_t kernel,
                                         std::int64_t stride, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  append_conv_bn(*s, in, out, kernel, stride, 1, true, gen);
  return s;
}

}  // namespace

std::array<InvertedResidualStage, 7> mobilenet_v2_stages(std::int64_t expansion) {
  const std::int64_t t = expansion;
  return {{{1, 16, 1, 1},
           {t, 24, 2, 1},
           {t, 32, 3, 2},
           {t, 64, 4, 2},
           {t, 96, 3, 1},
           {t, 160, 3, 2},
           {t, 320, 1, 1}}};
}

std::int64_t mobilenet_v2_channels(std::int64_t c, double width_mult) {
  return static_cast<std::int64_t>(static_cast<double>(c) * width_mult);
}

std::int64_t mobilenet_v2_last_channel(double width_mult) {
  return width_mult > 1.0 ? mobilenet_v2_channels(1280, width_mult) : 1280;
}

// ---- InvertedResidual

InvertedResidual::InvertedResidual(std::int64_t in, std::int64_t out, std::int64_t stride,
                                   std::int64_t expansion, Generator& gen)
    : residual_(stride == 1 && in == out) {
  MCD_CHECK(in > 0 && out > 0 && (stride == 1 || stride == 2) && expansion > 0,
            "InvertedResidual: invalid in {}, out {}, stride {} (1 or 2), expansion {}", in, out,
            stride, expansion);
  const std::int64_t hidden = in * expansion;
  conv_ = register_module("conv", std::make_shared<Sequential>());
  append_conv_bn(*conv_, in, hidden, 1, 1, 1, true, gen);
  append_conv_bn(*conv_, hidden, hidden, 3, stride, hidden, true, gen);
  append_conv_bn(*conv_, hidden, out, 1, 1, 1, false, gen);
}

Tensor InvertedResidual::forward(const Tensor& x) {
  return residual_ ? x + conv_->forward(x) : conv_->forward(x);
}

// ---- MobileNetV2

MobileNetV2::MobileNetV2(const MobileNetV2Spec& spec, const ModelConfig& config, Generator& gen)
    : spec_(spec), config_(config) {
  MCD_CHECK(spec.expansion > 0 && spec.width_mult > 0 && std::isfinite(spec.width_mult),
            "MobileNetV2: invalid expansion {}, width_mult {}", spec.expansion, spec.width_mult);
  MCD_CHECK(config.in_channels > 0 && config.num_classes > 0 && config.input_size > 0,
            "MobileNetV2: invalid config in_channels {}, num_classes {}, input_size {}",
            config.in_channels, config.num_classes, config.input_size);
  std::int64_t channels = mobilenet_v2_channels(32, spec.width_mult);
  MCD_CHECK(channels > 0, "MobileNetV2: width_mult {} leaves the stem with no channels",
            spec.width_mult);
  conv1_ = register_module("conv1", conv_bn_relu(config.in_channels, channels, 3, 2, gen));
  blocks_ = register_module("blocks", std::make_shared<Sequential>());
  for (const auto& [t, c, n, s] : mobilenet_v2_stages(spec.expansion)) {
    const std::int64_t out = mobilenet_v2_channels(c, spec.width_mult);
    MCD_CHECK(out > 0, "MobileNetV2: width_mult {} leaves a {}-channel stage with no channels",
              spec.width_mult, c);
    auto stage = std::make_shared<Sequential>();
    for (std::int64_t b = 0; b < n; ++b) {
      stage->push_back(std::make_shared<InvertedResidual>(channels, out, b == 0 ? s : 1, t, gen));
      channels = out;
    }
    blocks_->push_back(stage);
  }
  last_channel_ = mobilenet_v2_last_channel(spec.width_mult);
  conv2_ = register_module("conv2", conv_bn_relu(channels, last_channel_, 1, 1, gen));
  classifier_ = register_module("classifier", std::make_shared<Sequential>());
  classifier_->push_back(std::make_shared<Linear>(last_channel_, config.num_classes, gen));
}

Tensor MobileNetV2::forward_features(const Tensor& x) {
  check_defined("MobileNetV2", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels,
            "MobileNetV2: expected an input (N, {}, H, W), got shape {}", config_.in_channels,
            shape_str(x.shape()));
  const Tensor h = conv2_->forward(blocks_->forward(conv1_->forward(x)));
  // Global pooling: the reference's AvgPool2d(input_size / 16) at 32 pixels.
  return adaptive_avg_pool2d(h, 1, 1).flatten(1);
}

Tensor MobileNetV2::forward(const Tensor& x) {
  return classifier_->forward(forward_features(x));
}

}  // namespace mcd::nn
