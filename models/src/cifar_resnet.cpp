// CifarResNet: the stem and three stages of the shared BasicBlock (whose projection shortcut
// is exactly RepDistiller's downsample), registered in PyTorch's order so named_parameters()
// lists tensors as the reference implementation does.
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/pool.h>
#include <mcd/models/cifar_resnet.h>

namespace mcd::nn {

CifarResNet::CifarResNet(const CifarResNetSpec& spec, const ModelConfig& config, Generator& gen)
    : spec_(spec), config_(config) {
  MCD_CHECK(spec.depth >= 8 && (spec.depth - 2) % 6 == 0,
            "CifarResNet: depth must be 6n + 2 with n >= 1, got {}", spec.depth);
  for (std::size_t s = 0; s < spec.widths.size(); ++s)
    MCD_CHECK(spec.widths[s] > 0, "CifarResNet: widths[{}] must be positive, got {}", s,
              spec.widths[s]);
  MCD_CHECK(config.in_channels > 0 && config.num_classes > 0 && config.input_size > 0,
            "CifarResNet: invalid config in_channels {}, num_classes {}, input_size {}",
            config.in_channels, config.num_classes, config.input_size);

  conv1_ = register_module("conv1", std::make_shared<Conv2d>(config.in_channels, spec.widths[0], 3,
                                                             gen, 1, 1, 1, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(spec.widths[0]));
  std::int64_t in_planes = spec.widths[0];
  const std::int64_t n = blocks_per_stage();
  for (std::size_t s = 0; s < 3; ++s) {
    auto layer = std::make_shared<Sequential>();
    const std::int64_t planes = spec.widths[s + 1];
    for (std::int64_t b = 0; b < n; ++b) {
      const std::int64_t stride = (s > 0 && b == 0) ? 2 : 1;
      layer->push_back(std::make_shared<BasicBlock>(in_planes, planes, stride, gen));
      in_planes = planes;
    }
    layers_[s] = register_module("layer" + std::to_string(s + 1), layer);
  }
  fc_ = register_module("fc", std::make_shared<Linear>(in_planes, config.num_classes, gen));
}

Tensor CifarResNet::forward_features(const Tensor& x) {
  check_defined("CifarResNet", x);
  MCD_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels,
            "CifarResNet: expected an input (N, {}, H, W), got shape {}", config_.in_channels,
            shape_str(x.shape()));
  Tensor h = bn1_->forward_relu(conv1_->forward(x));
  for (const auto& layer : layers_)
    h = layer->forward(h);
  // Global pooling (RepDistiller's AvgPool2d(8) at 32 pixels) keeps any input size valid.
  return adaptive_avg_pool2d(h, 1, 1).flatten(1);
}

Tensor CifarResNet::forward(const Tensor& x) {
  return fc_->forward(forward_features(x));
}

}  // namespace mcd::nn
