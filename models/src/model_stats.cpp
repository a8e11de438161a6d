// count_parameters and count_macs. The forward runs on a zero image of the model's own dtype
// so that float64 models are measured as well; the values do not affect the count.
#include <mcd/engine/autograd.h>
#include <mcd/engine/mac_counter.h>
#include <mcd/models/model_stats.h>
#include <mcd/models/registry.h>

namespace mcd::nn {

std::int64_t count_parameters(const Module& model) {
  return model.num_parameters();
}

double count_macs(Module& model, const ModelConfig& config) {
  MCD_CHECK(config.in_channels > 0 && config.input_size > 0,
            "count_macs: invalid config in_channels {}, input_size {}", config.in_channels,
            config.input_size);
  const auto params = model.parameters();
  const DType dtype = params.empty() ? DType::Float32 : params.front().dtype();
  const Tensor x =
      Tensor::zeros({1, config.in_channels, config.input_size, config.input_size}, dtype);
  // Restores the training flag even when the forward throws.
  struct ModeRestore {
    Module& m;
    bool was_training;
    ~ModeRestore() { m.train(was_training); }
  } restore{model, model.is_training()};
  model.eval();
  NoGradGuard no_grad;
  MacCounter counter;
  model.forward(x);
  return static_cast<double>(counter.macs());
}

double count_macs(const std::string& name, const ModelConfig& config) {
  Generator gen(0);
  auto model = make_model(name, config, gen);
  return count_macs(*model, config);
}

}  // namespace mcd::nn
