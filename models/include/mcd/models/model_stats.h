// Model size and cost: parameter counts and the multiply-accumulates (MACs) of one forward
// pass of a single image. MACs are measured, not modelled: every conv2d and matmul that the
// forward runs reports its work to a MacCounter, so the figure is exactly what executes.
#pragma once
#include <cstdint>
#include <string>

#include <mcd/models/model_config.h>
#include <mcd/models/module.h>

namespace mcd::nn {

// Every trainable element (Module::num_parameters); buffers are not counted.
std::int64_t count_parameters(const Module& model);

// MACs of conv and linear layers for one (1, in_channels, input_size, input_size) input, run
// in eval mode without autograd; the model's training flag is restored afterwards.
// Elementwise ops, batch norm and pooling are not counted, as in the published figures.
double count_macs(Module& model, const ModelConfig& config);

// Builds the registered model `name` for `config` and measures it as above.
double count_macs(const std::string& name, const ModelConfig& config);

}  // namespace mcd::nn
