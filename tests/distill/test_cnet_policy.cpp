// The C-Net policy's meta step in its three parts (WeightingPolicy::prepare_before_step,
// before_step_on_device, finish_before_step), the contract a captured meta step relies on: the
// meta batch is drawn into the same tensors whenever its shape repeats, the key names that
// shape, the device part's outputs are the C-Net's gradient and the meta losses, and what the
// policy keeps of them is a copy (a replay rewrites the outputs in place).
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/data/loader.h>
#include <mcd/distill/trainer.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd;
using mcd::testing::iota;

namespace {

constexpr std::int64_t kClasses = 4, kSize = 8;

data::Dataset tiny_images(std::int64_t n) {
  return testing::random_dataset(n, 1, kSize, kSize, kClasses, 2,
                                 [](std::int64_t i, Generator&) { return i % kClasses; });
}

// Meta batches of 4 held-out images, in order.
data::LoaderOptions meta_batches_of_4() {
  data::LoaderOptions lo;
  lo.batch_size = 4;
  lo.shuffle = false;
  lo.normalization = {{127.5f}, {64.0f}};
  return lo;
}

}  // namespace

TEST_CASE("the C-Net policy's meta step in three parts", "[distill][trainer]") {
  // 10 held-out images in batches of 4: shapes 4, 4, 2, then the next epoch's 4.
  const data::Dataset val = tiny_images(10);
  const data::LoaderOptions lo = meta_batches_of_4();
  Generator gen(4);
  const nn::ModelConfig mc{1, kClasses, kSize};
  std::vector<distill::Student> students;
  for (const char* arch : {"resnet10_xxxs", "resnet10_xxs"}) {
    distill::Student s;
    s.name = arch;
    s.model = nn::make_model(arch, mc, gen);
    optim::SgdOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), o);
    students.push_back(std::move(s));
  }
  auto teacher = nn::make_model("resnet10_xxs", mc, gen);
  teacher->eval();
  nn::CNetConfig cc;
  cc.num_students = 2;
  cc.backbone = "resnet10_xxxs";
  cc.image = {1, 0, kSize};
  auto cnet = std::make_shared<nn::CNet>(cc, gen);
  distill::CNetWeighting policy(cnet, optim::AdamOptions{}, 5,
                                data::BatchIterator(val, iota(10), lo), true);

  const std::vector<double> first = policy.prepare_before_step(0);
  CHECK(first == std::vector<double>{4, 1, kSize, kSize});
  const float* storage = policy.meta_batch().images.data<float>();
  const std::vector<double> second = policy.prepare_before_step(5);
  CHECK(second == first);
  // The same tensors, refilled: images 4..7 now.
  CHECK(policy.meta_batch().images.data<float>() == storage);
  const data::Batch expected = data::make_batch(val, {4, 5, 6, 7}, lo.normalization);
  CHECK(policy.meta_batch().images.to_doubles() == expected.images.to_doubles());
  CHECK(policy.meta_batch().labels.to_doubles() == expected.labels.to_doubles());
  // A smaller batch: a new shape and key, then the next epoch's full batch again, in the full
  // shape's tensors (a meta step captured for that shape reads them).
  CHECK(policy.prepare_before_step(10) == std::vector<double>{2, 1, kSize, kSize});
  CHECK(policy.meta_batch().images.data<float>() != storage);
  CHECK(policy.prepare_before_step(15) == first);
  CHECK(policy.meta_batch().images.data<float>() == storage);
  CHECK(policy.meta_batch().images.to_doubles() ==
        data::make_batch(val, {0, 1, 2, 3}, lo.normalization).images.to_doubles());

  // The device part on a training batch: the C-Net's gradient, one per parameter, then the
  // students' meta losses.
  distill::LabelledBatch train{Tensor::randn({4, 1, kSize, kSize}, gen, DType::Float32),
                               Tensor::from_vector<std::int64_t>({0, 1, 2, 3}, {4})};
  distill::TeacherTargets targets;
  {
    NoGradGuard no_grad;
    targets = distill::make_mixture_targets({(*teacher)(train.images)}, 2.0);
  }
  const std::vector<Tensor> outputs = policy.before_step_on_device(students, train, targets, {});
  const auto params = cnet->parameters();
  REQUIRE(outputs.size() == params.size() + 1);
  for (std::size_t i = 0; i < params.size(); ++i)
    CHECK(outputs[i].shape() == params[i].shape());
  CHECK(outputs.back().shape() == Shape{2});

  const std::vector<Tensor> before = [&] {
    std::vector<Tensor> copies;
    for (const Tensor& p : params)
      copies.push_back(p.detach().clone());
    return copies;
  }();
  policy.finish_before_step(outputs);
  CHECK(policy.meta_steps() == 1);
  const std::vector<double> losses = outputs.back().to_doubles();
  // The float32 sum: two floats added once, so rounding their exact sum to float.
  const double sum = static_cast<float>(losses[0] + losses[1]);
  CHECK(policy.last_meta_loss() == sum);
  bool moved = false;
  for (std::size_t i = 0; i < params.size(); ++i)
    moved = moved || params[i].to_doubles() != before[i].to_doubles();
  CHECK(moved);  // Adam stepped on the gradient
  // A replay rewrites the outputs in place; the policy kept a copy of the losses.
  Tensor(outputs.back()).fill_(100.0);
  CHECK(policy.last_meta_loss() == sum);

  CHECK_THROWS_WITH(policy.finish_before_step({outputs.back()}),
                    Catch::Contains("CNetWeighting") && Catch::Contains("expected"));
}

TEST_CASE("the C-Net policy's share of the meta batch", "[distill][trainer][parallel]") {
  // 10 held-out images in batches of 4, shared by 3 replicas: each keeps 1 row (4 / 3 rounded
  // down), replica r row r; the last batch of 2 would leave replica 2 nothing and is passed over
  // for the next epoch's first.
  const data::Dataset val = tiny_images(10);
  const data::LoaderOptions lo = meta_batches_of_4();
  Generator gen(6);
  nn::CNetConfig cc;
  cc.num_students = 1;
  cc.backbone = "resnet10_xxxs";
  cc.image = {1, 0, kSize};
  auto policy = [&](int rank, int replicas) {
    auto p = std::make_unique<distill::CNetWeighting>(std::make_shared<nn::CNet>(cc, gen),
                                                      optim::AdamOptions{}, 5,
                                                      data::BatchIterator(val, iota(10), lo), true);
    p->set_meta_share(rank, replicas);
    return p;
  };
  for (int r = 0; r < 3; ++r) {
    auto p = policy(r, 3);
    CHECK(p->prepare_before_step(0) == std::vector<double>{1, 1, kSize, kSize});
    const data::Batch whole = data::make_batch(val, {0, 1, 2, 3}, lo.normalization);
    CHECK(p->meta_batch().images.to_doubles() == whole.images.slice(0, r, r + 1).to_doubles());
    CHECK(p->meta_batch().labels.to_doubles() == whole.labels.slice(0, r, r + 1).to_doubles());
    p->prepare_before_step(5);  // images 4..7
    CHECK(p->prepare_before_step(10) == std::vector<double>{1, 1, kSize, kSize});
    CHECK(p->meta_batch().images.to_doubles() == whole.images.slice(0, r, r + 1).to_doubles());
  }
  CHECK_THROWS_WITH(policy(2, 2), Catch::Contains("share 2 of 2 replicas"));
}
