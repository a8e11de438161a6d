// Inverted dropout: forward, vjp and jvp side by side. The mask (0 or 1 / (1 - p), drawn from
// the generator in row-major order) is saved, so the reverse and forward rules multiply by
// exactly the mask the forward used. The mask is always drawn on the host, so a device gets
// the same mask as the CPU for the same generator state; it is then copied to x's device.
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/dropout.h>
#include <mcd/engine/ops/elementwise.h>

#include "../dispatch.h"

namespace mcd {

namespace {

template <class T>
void draw_mask(std::int64_t n, double p, Generator& gen, T* mask) {
  const T keep = static_cast<T>(1.0 / (1.0 - p));
  for (std::int64_t i = 0; i < n; ++i)
    mask[i] = gen.uniform() < p ? T(0) : keep;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_defined("dropout", x);
  check_floating("dropout", x);
  MCD_CHECK(p >= 0.0 && p < 1.0, "dropout: probability p must be in [0, 1), got {} (input {})", p,
            shape_str(x.shape()));
  if (!training || p == 0.0) return x;

  Tensor mask = Tensor::empty(x.shape(), x.dtype());
  MCD_DISPATCH_FLOATING(x.dtype(), "dropout",
                        { draw_mask<scalar_t>(mask.numel(), p, gen, mask.data<scalar_t>()); });
  if (detail::on_device(x)) mask = mask.to(x.device());
  // mul of a detached operand records nothing; the node below is the op's only history.
  Tensor out = mul(x.detach(), mask);
  record(out, "dropout", {x},
         [mask](const Tensor& g) { return std::vector<Tensor>{mul(g, mask)}; });
  propagate_tangent(out, {x}, [&] { return mul(x.tangent(), mask); });
  return out;
}

}  // namespace mcd
