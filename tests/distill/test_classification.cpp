// Evaluation of a classifier over a subset in batches (the last one short): the mean loss and
// the accuracy against the same model run on the whole subset at once, and the model's mode
// restored.
#include <cstdint>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/data/loader.h>
#include <mcd/distill/classification.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/models/registry.h>

#include "support/random_dataset.h"

using namespace mcd;

TEST_CASE("evaluate over batches gives the numbers of one pass over the subset",
          "[distill][classification]") {
  Generator gen(5);
  const std::int64_t n = 23;
  const data::Dataset d = testing::random_dataset(n, 1, 8, 8, 4, 5, [](std::int64_t, Generator& g) {
    return static_cast<std::int64_t>(g.below(4));
  });
  const data::Normalization norm{{127.5f}, {64.0f}};
  // Every other image, out of order: 12 of them, in batches of 5, 5 and 2.
  std::vector<std::int64_t> subset;
  for (std::int64_t i = n - 1; i >= 0; i -= 2)
    subset.push_back(i);

  auto model = nn::make_model("resnet10_xxxs", {1, 4, 8}, gen);
  model->train();
  const distill::EvalResult r = distill::evaluate(*model, d, subset, norm, 5);
  CHECK(model->is_training());  // the mode comes back

  model->eval();
  NoGradGuard no_grad;
  data::Batch all = data::make_batch(d, subset, norm);
  const Tensor logits = (*model)(all.images);
  const double loss = mean(cross_entropy(logits, all.labels)).item();
  const std::vector<double> predicted = argmax(logits, 1).to_doubles();
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < subset.size(); ++i)
    correct +=
        static_cast<std::int64_t>(predicted[i]) == d.labels[static_cast<std::size_t>(subset[i])];
  CHECK(r.count == 12);
  CHECK(r.mean_loss == Approx(loss).epsilon(1e-5));  // float32 sums in another order
  CHECK(r.accuracy == Approx(static_cast<double>(correct) / 12.0));
  CHECK(distill::evaluate(*model, d, {}, norm, 5).count == 0);
}
