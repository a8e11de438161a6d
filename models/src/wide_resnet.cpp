// WideBasicBlock and WideResNet. Each stage is a module holding one Sequential named
// "layer", mirroring RepDistiller's NetworkBlock, so state-dict keys match the reference.
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/models/wide_resnet.h>

namespace mcd::nn {
namespace {

class WideStage : public Module {
 public:
  WideStage(std::int64_t blocks, std::int64_t in_planes, std::int64_t out_planes,
            std::int64_t stride, Generator& gen) {
    layer_ = register_module("layer", std::make_shared<Sequential>());
    for (std::int64_t b = 0; b < blocks; ++b)
      layer_->push_back(std::make_shared<WideBasicBlock>(b == 0 ? in_planes : out_planes,
                                                         out_planes, b == 0 ? stride : 1, gen));
  }
  Tensor forward(const Tensor& x) override { return layer_->forward(x); }

 private:
  std::shared_ptr<Sequential> layer_;
};

}  // namespace

// ---- WideBasicBlock

WideBasicBlock::WideBasicBlock(std::int64_t in_planes, std::int64_t out_planes, std::int64_t stride,
                               Generator& gen) {
  MCD_CHECK(in_planes > 0 && out_planes > 0 && stride > 0,
            "WideBasicBlock: invalid in_planes {}, out_planes {}, stride {}", in_planes, out_planes,
            stride);
  // An identity shortcut needs equal shapes; RepDistiller only checks the widths, so a
  // strided block with equal widths would not add up there either.
  MCD_CHECK(in_planes != out_planes || stride == 1,
            "WideBasicBlock: a block with equal widths ({}) must have stride 1, got {}", in_planes,
            stride);
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in_planes));
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_planes, out_planes, 3, gen, stride, 1, 1, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_planes));
  conv2_ = register_module(
      "conv2", std::make_shared<Conv2d>(out_planes, out_planes, 3, gen, 1, 1, 1, false));
  if (in_planes != out_planes)
    shortcut_ = register_module("convShortcut", std::make_shared<Conv2d>(in_planes, out_planes, 1,
                                                                         gen, stride, 0, 1, false));
}

Tensor WideBasicBlock::forward(const Tensor& x) {
  const Tensor act = bn1_->forward_relu(x);
  Tensor out = bn2_->forward_relu(conv1_->forward(act));
  out = conv2_->forward(out);
  return (shortcut_ ? shortcut_->forward(act) : x) + out;
}

// ---- WideResNet

WideResNet::WideResNet(const WideResNetSpec& spec, const ModelConfig& config, Generator& gen)
    : spec_(spec), config_(config) {
  MCD_CHECK(spec.depth >= 10 && (spec.depth - 4) % 6 == 0,
            "WideResNet: depth must be 6n + 4 with n >= 1, got {}", spec.depth);
  MCD_CHECK(spec.widen_factor > 0, "WideResNet: widen_factor must be positive, got {}",
            spec.widen_factor);
  MCD_CHECK(config.in_channels > 0 && config.num_classes > 0 && config.input_size > 0,
            "WideResNet: invalid config in_channels {}, num_classes {}, input_size {}",
            config.in_channels, config.num_classes, config.input_size);
  const auto w = widths();
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(config.in_channels, w[0], 3, gen, 1, 1, 1, false));
  for (std::size_t s = 0; s < 3; ++s)
    stages_[s] = register_module(
        "block" + std::to_string(s + 1),
        std::make_shared<WideStage>(blocks_per_stage(), w[s], w[s + 1], s == 0 ? 1 : 2, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(w[3]));
  fc_ = register_module("fc", std::make_shared<Linear>(w[3], config.num_classes, gen));
}

std::array<std::int64_t, 4> WideResNet::widths() const {
  const std::int64_t k = spec_.widen_factor;
  return {16, 16 * k, 32 * k, 64 * k};
}

Tensor WideResNet::forward_features(const Tensor& x) {
  check_defined("WideResNet", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels,
            "WideResNet: expected an input (N, {}, H, W), got shape {}", config_.in_channels,
            shape_str(x.shape()));
  Tensor h = conv1_->forward(x);
  for (const auto& stage : stages_)
    h = stage->forward(h);
  h = bn1_->forward_relu(h);
  return adaptive_avg_pool2d(h, 1, 1).flatten(1);
}

Tensor WideResNet::forward(const Tensor& x) {
  return fc_->forward(forward_features(x));
}

}  // namespace mcd::nn
