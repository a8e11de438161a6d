// Builds a model from the registry and differentiates through it: exits 0 when the engine
// behaves, 1 otherwise.
#include <cmath>
#include <cstdio>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/models/registry.h>

int main() {
  mcd::Generator gen(0);
  auto model = mcd::nn::make_model("resnet10_xxxs", {1, 10, 28}, gen);
  const mcd::Tensor x = mcd::Tensor::randn({2, 1, 28, 28}, gen);
  const mcd::Tensor loss = mcd::sum(mcd::mul((*model)(x), (*model)(x)));
  loss.backward();
  const double g =
      mcd::sum(mcd::mul(model->parameters()[0].grad(), model->parameters()[0].grad())).item();
  std::printf("consumer: loss %.6f, |grad conv1|^2 %.6f\n", loss.item(), g);
  return std::isfinite(g) && g > 0 ? 0 : 1;
}
