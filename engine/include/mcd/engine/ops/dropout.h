// Inverted dropout: in training, zeroes each element with probability p and scales the rest
// by 1 / (1 - p); the identity in eval mode. The mask comes from `gen`.
#pragma once
#include <mcd/engine/tensor.h>

namespace mcd {

class Generator;

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace mcd
