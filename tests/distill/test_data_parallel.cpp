// Data parallelism (engine/collective.h) with replicas as threads: the averaging itself (rank
// order, every replica the same, disagreeing replicas and abort named), then the trainer and the
// meta step as replicas against what they must equal:
//   - replicas given the same shard train exactly as one trainer on it, MC-Distil with meta
//     steps included (the mean of equal values is that value);
//   - replicas given different shards take the SGD step of the averaged gradients, with the
//     averaged BatchNorm statistics, bit for bit against the step written out by hand;
//   - the meta step's C-Net gradient over two shards against central finite differences of the
//     whole lookahead objective (theta' from the averaged gradient, M over both meta shards).
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/data/loader.h>
#include <mcd/distill/meta_step.h>
#include <mcd/distill/trainer.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/collective.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"
#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd;
using mcd::testing::iota;
using mcd::testing::random_tensor;

namespace {

constexpr std::int64_t kClasses = 4, kSize = 8;
// A regression that leaves a replica waiting fails the test instead of hanging it.
constexpr std::chrono::milliseconds kNoHang{120000};

// Runs body(r) on one thread per replica; rethrows the first failure after all have ended.
void on_replicas(int replicas, const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(replicas));
  std::vector<std::thread> threads;
  for (int r = 0; r < replicas; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads)
    t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::vector<double> values_of(const std::vector<Tensor>& tensors) {
  std::vector<double> all;
  for (const Tensor& t : tensors)
    for (double v : t.to_doubles())
      all.push_back(v);
  return all;
}

std::vector<double> values_of(const StateDict& state) {
  std::vector<double> all;
  for (const auto& [name, t] : state)
    for (double v : t.to_doubles())
      all.push_back(v);
  return all;
}

std::vector<double> state_of(const nn::Module& m) {
  return values_of(m.state_dict());
}

// A replica's or the reference's models, the same for the same seed.
struct World {
  std::vector<distill::Student> students;
  std::shared_ptr<nn::Module> teacher;
  std::shared_ptr<nn::CNet> cnet;
};

World make_world(std::uint64_t seed, DType dtype) {
  Generator gen(seed);
  const nn::ModelConfig mc{1, kClasses, kSize};
  World w;
  for (const char* arch : {"resnet10_xxxs", "resnet10_xxs"}) {
    distill::Student s;
    s.name = arch;
    s.model = nn::make_model(arch, mc, gen);
    s.model->to(dtype);
    optim::SgdOptions o;
    o.lr = 0.2;
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), o);
    w.students.push_back(std::move(s));
  }
  w.teacher = nn::make_model("resnet10_xxs", mc, gen);
  w.teacher->to(dtype);
  nn::CNetConfig cc;
  cc.num_students = 2;
  cc.backbone = "resnet10_xxxs";
  cc.image = {1, 0, kSize};
  w.cnet = std::make_shared<nn::CNet>(cc, gen);
  w.cnet->to(dtype);
  return w;
}

}  // namespace

TEST_CASE("ThreadCollectives: every replica gets the mean, summed in rank order",
          "[distill][parallel]") {
  constexpr int R = 3;
  ThreadCollectives group(R, kNoHang);
  CHECK(group.size() == R);
  CHECK(group.replica(2).rank() == 2);
  CHECK_THROWS_WITH(group.replica(3), Catch::Contains("replica 3 of 3"));
  std::vector<std::vector<double>> results(R);
  on_replicas(R, [&](int r) {
    Collective& c = group.replica(r);
    for (int round = 0; round < 20; ++round) {  // rounds back to back reuse the shared state
      Tensor a = Tensor::full({3}, 0.1 * (r + 1) + round, DType::Float32);
      Tensor b = Tensor::from_vector<double>({1.0 * r, -2.0 * r, 1e-17 * r, 3.0}, {2, 2});
      c.all_reduce_mean({a, Tensor(), b.transpose(0, 1)});  // a strided view is written through
      if (round == 19) results[static_cast<std::size_t>(r)] = values_of(std::vector<Tensor>{a, b});
    }
  });
  // float32: each replica's value rounded to float32, their mean in float64 (from 0, in rank
  // order) rounded once; float64 in rank order; the view's values back in their places.
  auto f32 = [](double v) { return static_cast<double>(static_cast<float>(v)); };
  const double a = f32((0.0 + f32(0.1 + 19) + f32(0.2 + 19) + f32(0.3 + 19)) / 3);
  const std::vector<double> expected = {a,
                                        a,
                                        a,
                                        (0.0 + 0.0 + 1.0 + 2.0) / 3,
                                        (0.0 - 0.0 - 2.0 - 4.0) / 3,
                                        (0.0 + 0.0 + 1e-17 + 2e-17) / 3,
                                        3.0};
  for (int r = 0; r < R; ++r)
    CHECK(results[static_cast<std::size_t>(r)] == expected);
}

TEST_CASE("ThreadCollectives: replicas that disagree, and abort, fail every replica",
          "[distill][parallel]") {
  {
    ThreadCollectives group(2, kNoHang);
    CHECK_THROWS_WITH(on_replicas(2,
                                  [&](int r) {
                                    Tensor t = Tensor::zeros({r == 0 ? 3 : 4}, DType::Float64);
                                    group.replica(r).all_reduce_mean({t});
                                  }),
                      Catch::Contains("replica 1 reduces [float64[4] ]") &&
                          Catch::Contains("replica 0 reduces [float64[3] ]"));
  }
  {
    ThreadCollectives group(2, kNoHang);
    // Replica 1 fails before its reduction; replica 0 would wait for ever without abort().
    CHECK_THROWS_WITH(on_replicas(2,
                                  [&](int r) {
                                    if (r == 1) {
                                      group.abort("replica 1 failed");
                                      return;
                                    }
                                    Tensor t = Tensor::zeros({2}, DType::Float64);
                                    group.replica(r).all_reduce_mean({t});
                                  }),
                      Catch::Contains("aborted: replica 1 failed"));
  }
  ThreadCollectives one(1);
  Tensor ints = Tensor::zeros({2}, DType::Int64);
  CHECK_THROWS_WITH(one.replica(0).all_reduce_mean({ints}), Catch::Contains("only floating"));
}

TEST_CASE("replicas given the same shard train exactly as one trainer on it",
          "[distill][parallel]") {
  // MC-Distil with a meta step every other iteration: every averaged quantity is the mean of
  // equal values, which is that value, so two replicas must match one trainer bit for bit.
  const data::Dataset train = testing::random_dataset(
      24, 1, kSize, kSize, kClasses, 7, [](std::int64_t i, Generator&) { return i % kClasses; });
  const data::Dataset val = testing::random_dataset(
      12, 1, kSize, kSize, kClasses, 8, [](std::int64_t i, Generator&) { return i % kClasses; });
  data::LoaderOptions lo;
  lo.batch_size = 6;
  lo.shuffle = false;
  lo.normalization = {{127.5f}, {64.0f}};
  constexpr int kSteps = 4;

  // Runs on the replicas' threads too: no test assertion inside (Catch is not thread-safe);
  // returns the meta steps taken.
  auto run = [&](World& w, Collective* collective) {
    auto policy = std::make_unique<distill::CNetWeighting>(
        w.cnet, optim::AdamOptions{}, 2, data::BatchIterator(val, iota(12), lo), true);
    distill::CNetWeighting& cnet_policy = *policy;
    distill::Trainer trainer(w.students, w.teacher, std::move(policy), 2.0);
    trainer.set_collective(collective);
    data::BatchIterator batches(train, iota(24), lo);
    data::Batch b;
    for (int step = 0; step < kSteps; ++step) {
      if (!batches.next(b)) throw std::runtime_error("the training set ran out");
      trainer.step(b);
    }
    return cnet_policy.meta_steps();
  };
  World alone = make_world(3, DType::Float32);
  CHECK(run(alone, nullptr) == kSteps / 2);
  std::vector<World> replicas;
  replicas.push_back(make_world(3, DType::Float32));
  replicas.push_back(make_world(3, DType::Float32));
  ThreadCollectives group(2, kNoHang);
  std::vector<std::int64_t> meta_steps(2);
  on_replicas(2, [&](int r) {
    const auto i = static_cast<std::size_t>(r);
    meta_steps[i] = run(replicas[i], &group.replica(r));
  });
  CHECK(meta_steps == std::vector<std::int64_t>{kSteps / 2, kSteps / 2});
  for (const World& w : replicas) {
    for (std::size_t k = 0; k < alone.students.size(); ++k) {
      CHECK(state_of(*w.students[k].model) == state_of(*alone.students[k].model));
      CHECK(values_of(w.students[k].optimizer->state_dict()) ==
            values_of(alone.students[k].optimizer->state_dict()));
      CHECK(w.students[k].meters.to_vector() == alone.students[k].meters.to_vector());
    }
    CHECK(state_of(*w.cnet) == state_of(*alone.cnet));
  }
}

TEST_CASE("replicas given different shards take the step of the averaged gradients",
          "[distill][parallel]") {
  // KD, float64, one step on shards A and B. The reference writes the step out: each shard's
  // gradient by its own forward and backward (BatchNorm statistics of its shard), their mean,
  // SGD on it; BatchNorm's running statistics the mean of the two shards' updates.
  Generator gen(21);
  const std::int64_t half = 4;
  const Tensor images = random_tensor({2 * half, 1, kSize, kSize}, gen);
  const Tensor labels = Tensor::from_vector<std::int64_t>({0, 1, 2, 3, 3, 2, 1, 0}, {2 * half});
  auto shard = [&](int r) {
    data::Batch b;
    b.images = images.slice(0, r * half, (r + 1) * half).clone();
    b.labels = labels.slice(0, r * half, (r + 1) * half).clone();
    return b;
  };
  const double kd_alpha = 0.4, tau = 2.0;

  std::vector<World> replicas;
  replicas.push_back(make_world(5, DType::Float64));
  replicas.push_back(make_world(5, DType::Float64));
  ThreadCollectives group(2, kNoHang);
  on_replicas(2, [&](int r) {
    World& w = replicas[static_cast<std::size_t>(r)];
    distill::Trainer trainer(w.students, w.teacher, distill::kd_weighting(kd_alpha), tau);
    trainer.set_collective(&group.replica(r));
    trainer.step(shard(r));
  });

  World ref = make_world(5, DType::Float64);
  ref.teacher->eval();
  for (std::size_t k = 0; k < ref.students.size(); ++k) {
    nn::Module& model = *ref.students[k].model;
    const auto params = model.parameters();
    const StateDict start = [&] {
      StateDict copy;
      for (const auto& [name, t] : model.state_dict())
        copy[name] = t.clone();
      return copy;
    }();
    std::vector<Tensor> grad_sum, buffer_sum;
    for (int r = 0; r < 2; ++r) {
      model.load_state_dict(start, "start");
      const data::Batch b = shard(r);
      distill::TeacherTargets targets;
      {
        NoGradGuard no_grad;
        targets = distill::make_mixture_targets({(*ref.teacher)(b.images)}, tau);
      }
      model.train();
      const Tensor z = model(b.images);
      const auto out = distill::fused_distill_loss(
          {z.detach()}, targets, b.labels, Tensor::full({1, half}, 1.0 - kd_alpha, DType::Float64),
          Tensor::full({1, half}, kd_alpha, DType::Float64));
      const std::vector<Tensor> g = grad({z}, params, {out.grad_logits.squeeze(0)});
      std::vector<Tensor> buffers;
      for (const auto& [name, t] : model.named_buffers())
        if (is_floating(t.dtype())) buffers.push_back(t.clone());
      for (std::size_t i = 0; i < g.size(); ++i)
        if (r == 0)
          grad_sum.push_back(g[i]);
        else
          grad_sum[i] = add(grad_sum[i], g[i]);
      for (std::size_t i = 0; i < buffers.size(); ++i)
        if (r == 0)
          buffer_sum.push_back(buffers[i]);
        else
          buffer_sum[i] = add(buffer_sum[i], buffers[i]);
    }
    model.load_state_dict(start, "start");
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).set_grad(mul(grad_sum[i], 0.5));
    ref.students[k].optimizer->step();
    // Running statistics averaged; the batch counters count one batch, as on each replica.
    std::size_t j = 0;
    for (const auto& [name, t] : model.named_buffers())
      if (is_floating(t.dtype()))
        Tensor(t).copy_(mul(buffer_sum[j++], 0.5));
      else
        Tensor(t).copy_(Tensor::full(t.shape(), 1.0, t.dtype()));
    for (const World& w : replicas) {
      INFO("student " << k);
      CHECK(state_of(*w.students[k].model) == state_of(model));  // bit for bit
    }
  }
}

TEST_CASE("the meta step over two shards gives the whole batch's C-Net gradient",
          "[distill][parallel][meta]") {
  // Against central differences of M(phi) = sum_k mean over both meta shards of
  // ce(S_k(xv; theta'_k)), theta'_k = theta_k - eta d(the mean of the shards' gradients), each
  // shard's gradient with the C-Net's weights and BatchNorm statistics of that shard.
  Generator gen(31);
  const std::int64_t B = 4, Bv = 3;
  std::vector<distill::LabelledBatch> train, val;
  std::vector<distill::TeacherTargets> targets;
  for (int r = 0; r < 2; ++r) {
    train.push_back({random_tensor({B, 1, kSize, kSize}, gen),
                     Tensor::from_vector<std::int64_t>({0, 1, 2, 3 - r}, {B})});
    val.push_back({random_tensor({Bv, 1, kSize, kSize}, gen),
                   Tensor::from_vector<std::int64_t>({r, 2, 3}, {Bv})});
    targets.push_back(
        distill::make_teacher_targets(mul(random_tensor({B, kClasses}, gen), 3.0), 2.0));
  }
  auto refs = [](World& w) {
    std::vector<distill::StudentRef> out;
    for (auto& s : w.students)
      out.push_back({s.model.get(), s.optimizer.get()});
    return out;
  };
  auto prepare = [](World& w) {
    for (auto& s : w.students)
      s.model->train();
    w.cnet->train();
  };

  std::vector<World> replicas;
  replicas.push_back(make_world(9, DType::Float64));
  replicas.push_back(make_world(9, DType::Float64));
  std::vector<distill::MetaStepResult> results(2);
  ThreadCollectives group(2, kNoHang);
  on_replicas(2, [&](int r) {
    const auto i = static_cast<std::size_t>(r);
    prepare(replicas[i]);
    results[i] = distill::meta_gradient(refs(replicas[i]), *replicas[i].cnet, train[i], targets[i],
                                        val[i], {}, &group.replica(r));
  });
  CHECK(values_of(results[0].cnet_grads) == values_of(results[1].cnet_grads));
  CHECK(results[0].meta_losses.to_doubles() == results[1].meta_losses.to_doubles());

  World ref = make_world(9, DType::Float64);
  prepare(ref);
  auto objective = [&] {
    double total = 0;
    for (auto& s : ref.students) {
      nn::Module& m = *s.model;
      const auto params = m.parameters();
      StateDict start;
      for (const auto& [name, t] : m.state_dict())
        start[name] = t.clone();
      const StateDict cnet_start = [&] {
        StateDict c;
        for (const auto& [name, t] : ref.cnet->state_dict())
          c[name] = t.clone();
        return c;
      }();
      const std::int64_t k = &s - ref.students.data();
      std::vector<Tensor> mean_grad;
      for (int r = 0; r < 2; ++r) {
        const auto i = static_cast<std::size_t>(r);
        const Tensor w =
            distill::cnet_weights(*ref.cnet, train[i].images, {}, targets[i], train[i].labels);
        ref.cnet->load_state_dict(cnet_start, "start");
        const Tensor alpha = distill::alpha_of(w.detach()), beta = distill::beta_of(w.detach());
        const Tensor z = m(train[i].images);
        m.load_state_dict(start, "start");
        const auto out =
            distill::fused_distill_loss({z.detach()}, targets[i], train[i].labels,
                                        alpha.slice(0, k, k + 1), beta.slice(0, k, k + 1));
        const std::vector<Tensor> g = grad({z}, params, {out.grad_logits.squeeze(0)});
        for (std::size_t p = 0; p < g.size(); ++p)
          if (r == 0)
            mean_grad.push_back(mul(g[p], 0.5));
          else
            mean_grad[p] = add(mean_grad[p], mul(g[p], 0.5));
      }
      NoGradGuard no_grad;
      for (std::size_t p = 0; p < params.size(); ++p)
        Tensor(params[p]).add_(s.optimizer->lookahead_direction(p, mean_grad[p]),
                               -s.optimizer->lr());
      for (int r = 0; r < 2; ++r) {
        const auto i = static_cast<std::size_t>(r);
        total += 0.5 * mean(cross_entropy(m(val[i].images), val[i].labels)).item();
      }
      m.load_state_dict(start, "start");
    }
    return total;
  };
  CHECK(sum(results[0].meta_losses).item() == Approx(objective()).epsilon(1e-12));

  const auto params = ref.cnet->parameters();
  std::vector<Tensor> u;
  double norm2 = 0, analytic = 0;
  for (const Tensor& p : params) {
    u.push_back(random_tensor(p.shape(), gen));
    norm2 += sum(mul(u.back(), u.back())).item();
  }
  for (auto& t : u)
    t.mul_(1.0 / std::sqrt(norm2));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto g = results[0].cnet_grads[i].to_doubles(), d = u[i].to_doubles();
    for (std::size_t j = 0; j < g.size(); ++j)
      analytic += g[j] * d[j];
  }
  auto move = [&](double t) {
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).add_(u[i], t);
  };
  auto at = [&](double t) {
    move(t);
    const double m = objective();
    move(-t);
    return m;
  };
  const double h = 1e-6;
  const double numeric = (at(h) - at(-h)) / (2 * h);
  INFO(fmt::format("directional: numeric {:.15g} analytic {:.15g}", numeric, analytic));
  REQUIRE(std::abs(analytic) > 0);
  CHECK(std::abs(numeric - analytic) <= 1e-6 * std::abs(analytic));
}

TEST_CASE("a replica whose step fails makes the others fail instead of wait",
          "[distill][parallel]") {
  // Replica 1's shard has a label out of range: its step throws before its first reduction and
  // aborts the group, so replica 0, waiting there (or about to), fails too.
  Generator gen(13);
  std::vector<World> replicas;
  replicas.push_back(make_world(15, DType::Float64));
  replicas.push_back(make_world(15, DType::Float64));
  std::vector<data::Batch> shards(2);
  for (std::int64_t r = 0; r < 2; ++r) {
    shards[static_cast<std::size_t>(r)].images = random_tensor({4, 1, kSize, kSize}, gen);
    shards[static_cast<std::size_t>(r)].labels =
        Tensor::from_vector<std::int64_t>({0, 1, r == 1 ? kClasses : 2, 3}, {4});
  }
  ThreadCollectives group(2, kNoHang);
  std::vector<std::string> errors(2);
  on_replicas(2, [&](int r) {
    const auto i = static_cast<std::size_t>(r);
    World& w = replicas[i];
    distill::Trainer trainer(w.students, w.teacher, distill::kd_weighting(0.5), 2.0);
    trainer.set_collective(&group.replica(r));
    try {
      trainer.step(shards[i]);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  });
  CHECK_THAT(errors[1], Catch::Contains("4"));
  CHECK_THAT(errors[0], Catch::Contains("aborted by replica 1"));
}

TEST_CASE("ThreadCollectives: a replica that never comes fails the others after the timeout",
          "[distill][parallel]") {
  ThreadCollectives group(2, std::chrono::milliseconds(50));
  Tensor t = Tensor::zeros({2}, DType::Float64);
  CHECK_THROWS_WITH(group.replica(0).all_reduce_mean({t}),
                    Catch::Contains("replica 0 waited 50 ms for the others"));
}
