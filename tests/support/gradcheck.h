// Float64 derivative checks against central finite differences, for reverse mode (VJP) and
// forward mode (JVP), plus the identity <u, J v> = <J^T u, v>. A failure reports the worst
// element with both values. Inputs may be non-contiguous views; integer inputs are constants.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <mcd/engine/generator.h>
#include <mcd/engine/tensor.h>

namespace mcd::testing {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradCheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;  // |num - ana| <= atol + rtol * |ana|
  double rtol = 1e-3;
  bool check_vjp = true;
  bool check_jvp = true;
};

// Runs every check inside Catch2 REQUIREs.
void check_gradients(const std::string& name, const TensorFn& f, std::vector<Tensor> inputs,
                     std::uint64_t seed = 1, const GradCheckOptions& options = {});

// Derivatives with respect to tensors the function holds (a module's parameters), as the
// meta-gradient uses them: random tangents attached with DualScope give a JVP that must match
// central differences along the tangent, and <u, J v> = <J^T u, v> against reverse mode.
// Tangents and then u are drawn from `gen`. Returns the reverse-mode gradients J^T u.
std::vector<Tensor> check_parameter_derivatives(const std::vector<Tensor>& params,
                                                const std::function<Tensor()>& run, Generator& gen);

// Random float64 tensor, values uniform in [lo, hi).
Tensor random_tensor(const Shape& shape, Generator& gen, double lo = -1.0, double hi = 1.0);

}  // namespace mcd::testing
