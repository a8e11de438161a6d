// A named collection of tensors: model weights and buffers, optimizer state, checkpoints.
// Keys follow PyTorch's state-dict names (`layer1.0.conv1.weight`, `bn1.running_mean`).
#pragma once
#include <map>
#include <string>

#include <mcd/engine/tensor.h>

namespace mcd {

using StateDict = std::map<std::string, Tensor>;

}  // namespace mcd
