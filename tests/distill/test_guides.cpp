// Several teachers at once: the teacher mixture of the fused loss (its kl is the mean KL over
// the guides, its loss and dL/dz those of the mean of the per-guide losses), DGKD's seeded
// dropping of guides, and the trainer with several teachers against the same step written
// with one teacher and a scaled KD weight.
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/distill/fused_loss.h>
#include <mcd/distill/trainer.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::testing::random_tensor;
using V = std::vector<Tensor>;

namespace {

void expect_close(const std::string& what, const Tensor& actual, const Tensor& expected,
                  double tol) {
  REQUIRE(actual.shape() == expected.shape());
  const auto a = actual.to_doubles(), e = expected.to_doubles();
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::isfinite(a[i]) ? std::abs(a[i] - e[i]) / (1.0 + std::abs(e[i]))
                                                : std::numeric_limits<double>::infinity());
  INFO(fmt::format("{}: worst relative difference {:.3g}", what, worst));
  CHECK(worst <= tol);
}

Tensor row(const Tensor& t, std::int64_t s) {
  return t.slice(0, s, s + 1).reshape({t.size(1)});
}

// Student s's loss against one teacher by unfused ops: mean_i(alpha ce + tau^2 beta kl).
Tensor composed_loss(const Tensor& z, const Tensor& teacher_logits, const Tensor& labels,
                     const Tensor& alpha, const Tensor& beta, std::int64_t s, double tau) {
  const Tensor kl = kl_div_softmax(z, teacher_logits, tau);
  return mean(
      add(mul(row(alpha, s), cross_entropy(z, labels)), mul(mul(row(beta, s), kl), tau * tau)));
}

}  // namespace

TEST_CASE("a teacher mixture gives the mean of the per-teacher losses", "[distill][guides]") {
  for (double scale : {3.0, 60.0}) {  // 60: most probabilities underflow in every guide
    Generator gen(5);
    const std::int64_t k = 2, b = 5, v = 7, n = 3;
    const double tau = 2.0;
    V students, teachers;
    for (std::int64_t s = 0; s < k; ++s)
      students.push_back(random_tensor({b, v}, gen, -3.0, 3.0));
    for (std::int64_t j = 0; j < n; ++j)
      teachers.push_back(random_tensor({b, v}, gen, -scale, scale));
    std::vector<std::int64_t> y;
    for (std::int64_t i = 0; i < b; ++i)
      y.push_back(static_cast<std::int64_t>(gen.below(v)));
    const Tensor labels = Tensor::from_vector(y, {b});
    const Tensor alpha = random_tensor({k, b}, gen, 0.1, 1.5);
    const Tensor beta = random_tensor({k, b}, gen, 0.1, 1.5);

    const distill::TeacherTargets mix = distill::make_mixture_targets(teachers, tau);
    CHECK(mix.guides == n);
    const auto f = distill::fused_distill_loss(students, mix, labels, alpha, beta);
    for (std::int64_t s = 0; s < k; ++s) {
      const auto su = static_cast<std::size_t>(s);
      const Tensor leaf = students[su].detach().set_requires_grad(true);
      Tensor ref_loss, ref_kl;
      for (const Tensor& t : teachers) {
        const Tensor l = mul(composed_loss(leaf, t, labels, alpha, beta, s, tau), 1.0 / n);
        const Tensor kl = mul(kl_div_softmax(leaf, t, tau), 1.0 / n);
        ref_loss = ref_loss.defined() ? add(ref_loss, l) : l;
        ref_kl = ref_kl.defined() ? add(ref_kl, kl) : kl;
      }
      const std::string tag = fmt::format("scale {} student {}", scale, s);
      expect_close(tag + " kl", row(f.kl, s), ref_kl.detach(), 1e-11);
      expect_close(tag + " loss", f.loss.slice(0, s, s + 1).reshape({}), ref_loss.detach(), 1e-11);
      expect_close(tag + " grad", f.grad_logits.slice(0, s, s + 1).reshape({b, v}),
                   grad({ref_loss}, {leaf})[0], 1e-11);
    }
    // The differentiable op's reverse rule in beta sees the whole mean KL, offset included.
    const Tensor beta_leaf = beta.detach().set_requires_grad(true);
    const Tensor loss = sum(distill::distill_loss(students, mix, labels, alpha, beta_leaf));
    expect_close("dL/dbeta", grad({loss}, {beta_leaf})[0],
                 mul(f.kl, tau * tau / static_cast<double>(b)), 1e-12);
  }
}

TEST_CASE("distill_loss against a teacher mixture: gradient checks in every input",
          "[distill][guides][grad]") {
  Generator gen(6);
  const std::int64_t b = 4, v = 5;
  const distill::TeacherTargets mix = distill::make_mixture_targets(
      {random_tensor({b, v}, gen, -3, 3), random_tensor({b, v}, gen, -3, 3),
       random_tensor({b, v}, gen, -3, 3)},
      2.0);
  const Tensor labels = Tensor::from_vector<std::int64_t>({0, 4, 2, 1}, {b});
  // Float64 central differences for reverse and forward mode: the offset enters through beta.
  mcd::testing::check_gradients(
      "distill_loss with a mixture",
      [&](const V& in) {
        return distill::distill_loss({in[0], in[1]}, mix, labels, in[2], in[3]);
      },
      {random_tensor({b, v}, gen, -3, 3), random_tensor({b, v}, gen, -3, 3),
       random_tensor({2, b}, gen, 0.1, 1.5), random_tensor({2, b}, gen, 0.1, 1.5)});
}

TEST_CASE("a single-teacher mixture is the teacher's own targets", "[distill][guides]") {
  Generator gen(8);
  const Tensor z = random_tensor({4, 6}, gen);
  const auto one = distill::make_mixture_targets({z}, 1.5);
  const auto ref = distill::make_teacher_targets(z, 1.5);
  CHECK(!one.kl_offset.defined());
  CHECK(one.guides == 1);
  expect_close("prob", one.prob, ref.prob, 0.0);
  CHECK_THROWS_WITH(distill::make_mixture_targets({}, 1.0),
                    Catch::Contains("at least one teacher"));
  CHECK_THROWS_WITH(distill::make_mixture_targets({z, random_tensor({4, 5}, gen)}, 1.0),
                    Catch::Contains("teacher 1 logits"));
}

TEST_CASE("DGKD drops guides by a seeded draw and keeps at least one", "[distill][guides]") {
  distill::DgkdWeighting dgkd(0.5, 1, 42), same(0.5, 1, 42);
  std::set<std::size_t> dropped;
  for (std::int64_t it = 0; it < 200; ++it) {
    const auto kept = dgkd.select_guides(it, 3);
    REQUIRE(kept.size() == 2);
    CHECK(kept[0] < kept[1]);
    CHECK(kept == same.select_guides(it, 3));  // a resumed stage draws the same
    for (std::size_t j = 0; j < 3; ++j)
      if (kept[0] != j && kept[1] != j) dropped.insert(j);
  }
  CHECK(dropped.size() == 3);  // every guide sits out some iterations
  CHECK(dgkd.select_guides(7, 1) == std::vector<std::size_t>{0});
  CHECK(distill::DgkdWeighting(0.5, 9, 1).select_guides(3, 4).size() == 1);
  CHECK(distill::DgkdWeighting(0.5, 0, 1).select_guides(3, 4).size() == 4);
  CHECK_THROWS_WITH(distill::DgkdWeighting(0.5, -1, 1), Catch::Contains("drop"));
}

namespace {

std::vector<distill::Student> make_students(std::uint64_t seed) {
  std::vector<distill::Student> students;
  for (const char* arch : {"resnet10_xxxs", "resnet10_xxs"}) {
    Generator gen(seed++);
    distill::Student s;
    s.name = arch;
    s.model = nn::make_model(arch, {1, 4, 8}, gen);
    s.model->to(DType::Float64);
    optim::SgdOptions o;
    o.lr = 0.2;
    o.momentum = 0.9;
    s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), o);
    students.push_back(std::move(s));
  }
  return students;
}

}  // namespace

TEST_CASE("DGKD with identical guides is KD with the KD weight times their number",
          "[distill][guides]") {
  Generator gen(3);
  auto teacher = nn::make_model("resnet10_xxs", {1, 4, 8}, gen);
  teacher->to(DType::Float64);
  auto copy = nn::make_model("resnet10_xxs", {1, 4, 8}, gen);
  copy->to(DType::Float64);
  copy->load_state_dict(teacher->state_dict(), "teacher");
  data::Batch batch;
  batch.images = random_tensor({6, 1, 8, 8}, gen);
  batch.labels = Tensor::from_vector<std::int64_t>({0, 1, 2, 3, 1, 2}, {6});

  auto dgkd_students = make_students(10), kd_students = make_students(10);
  const double a = 0.3, tau = 2.0;
  distill::Trainer dgkd(dgkd_students, {teacher, copy},
                        std::make_unique<distill::DgkdWeighting>(a, 0, 1), tau);
  distill::Trainer kd(kd_students, teacher,
                      std::make_unique<distill::FixedWeighting>("kd2", 1 - a, 2 * a), tau);
  for (int step = 0; step < 2; ++step) {
    dgkd.step(batch);
    kd.step(batch);
  }
  for (std::size_t s = 0; s < dgkd_students.size(); ++s) {
    const auto p = dgkd_students[s].model->parameters();
    const auto q = kd_students[s].model->parameters();
    for (std::size_t i = 0; i < p.size(); ++i)
      expect_close(fmt::format("student {} parameter {}", s, i), p[i], q[i], 1e-12);
    CHECK(dgkd_students[s].meters.beta == Approx(kd_students[s].meters.beta));
    CHECK(dgkd_students[s].meters.beta_hist == kd_students[s].meters.beta_hist);
  }
}

TEST_CASE("weight histograms bin [0, 1) in twentieths and the rest last", "[distill][guides]") {
  using M = distill::Meters;
  CHECK(M::weight_bin(0.0) == 0);
  CHECK(M::weight_bin(0.049) == 0);
  CHECK(M::weight_bin(0.05) == 1);
  CHECK(M::weight_bin(0.5) == 10);
  CHECK(M::weight_bin(0.99999) == 19);
  CHECK(M::weight_bin(1.0) == 20);
  CHECK(M::weight_bin(7.0) == 20);
  CHECK(M::weight_bin(-1.0) == 0);
  M m;
  m.seen = 3;
  m.alpha_hist[4] = 2;
  m.beta_hist[20] = 1;
  const M back = M::from_vector(m.to_vector());
  CHECK(back.alpha_hist == m.alpha_hist);
  CHECK(back.beta_hist == m.beta_hist);
  CHECK(M::from_vector(std::vector<double>(9, 1.0)).alpha_hist == M::Histogram{});
}

namespace {

// KD's fixed weights, with a switch for whether the trainer must run every student's forward
// before asking for them (the joint pass) or may run the students one at a time.
class KdWeightsFor final : public distill::WeightingPolicy {
 public:
  explicit KdWeightsFor(bool need_logits) : need_logits_(need_logits) {}
  std::string name() const override { return "kd"; }
  bool needs_teacher() const override { return true; }
  bool weights_need_student_logits() const override { return need_logits_; }
  std::pair<Tensor, Tensor> weights(const distill::WeightInputs& in) override {
    CHECK(in.student_logits.size() == (need_logits_ ? std::size_t{2} : std::size_t{0}));
    return kd_.weights(in);
  }

 private:
  bool need_logits_;
  distill::FixedWeighting kd_{"kd", 0.6, 0.4};
};

}  // namespace

TEST_CASE("students one at a time give the numbers of the joint pass", "[distill][trainer]") {
  Generator gen(8);
  auto teacher = nn::make_model("resnet10_xxs", {1, 4, 8}, gen);
  teacher->to(DType::Float64);
  auto one_by_one = make_students(20), joint = make_students(20);
  distill::Trainer a(one_by_one, teacher, std::make_unique<KdWeightsFor>(false), 2.0);
  distill::Trainer b(joint, teacher, std::make_unique<KdWeightsFor>(true), 2.0);
  for (int step = 0; step < 3; ++step) {
    data::Batch batch;
    batch.images = random_tensor({6, 1, 8, 8}, gen);
    batch.labels = Tensor::from_vector<std::int64_t>({0, 1, 2, 3, 1, 2}, {6});
    a.step(batch);
    b.step(batch);
  }
  for (std::size_t s = 0; s < joint.size(); ++s) {
    const auto p = one_by_one[s].model->state_dict(), q = joint[s].model->state_dict();
    for (const auto& [name, t] : q)
      CHECK(p.at(name).to_doubles() == t.to_doubles());  // bit for bit
    const auto mp = one_by_one[s].optimizer->state_dict(), mq = joint[s].optimizer->state_dict();
    for (const auto& [name, t] : mq)
      CHECK(mp.at(name).to_doubles() == t.to_doubles());
    CHECK(one_by_one[s].meters.to_vector() == joint[s].meters.to_vector());
  }
}

TEST_CASE("deferred meters lag one step and add up to the same after a flush",
          "[distill][trainer]") {
  Generator gen(9);
  auto teacher = nn::make_model("resnet10_xxs", {1, 4, 8}, gen);
  teacher->to(DType::Float64);
  auto deferred = make_students(30), at_once = make_students(30);
  distill::Trainer a(deferred, teacher, distill::kd_weighting(0.4), 2.0);
  distill::Trainer b(at_once, teacher, distill::kd_weighting(0.4), 2.0);
  a.set_deferred_meters(true);
  CHECK(a.deferred_meters());
  CHECK_FALSE(b.deferred_meters());
  // One batch object refilled in place, as a loader may: the meters must use each step's own
  // labels, not the buffer's contents when they are finally added.
  data::Batch batch;
  batch.images = Tensor::empty({6, 1, 8, 8}, DType::Float64);
  batch.labels = Tensor::empty({6}, DType::Int64);
  const std::int64_t B = 6;
  for (int step = 1; step <= 4; ++step) {
    batch.images.copy_(random_tensor({6, 1, 8, 8}, gen));
    auto* y = batch.labels.data<std::int64_t>();
    for (std::int64_t i = 0; i < B; ++i)
      y[i] = (i * step) % 4;
    a.step(batch);
    b.step(batch);
    for (std::size_t s = 0; s < deferred.size(); ++s) {
      CHECK(at_once[s].meters.seen == step * B);
      CHECK(deferred[s].meters.seen == (step - 1) * B);  // the last step is still on its way
    }
    if (step == 2) {
      a.flush_meters();
      a.flush_meters();  // nothing left: adds nothing
      for (std::size_t s = 0; s < deferred.size(); ++s)
        CHECK(deferred[s].meters.to_vector() == at_once[s].meters.to_vector());
    }
  }
  a.set_deferred_meters(false);  // flushes
  for (std::size_t s = 0; s < deferred.size(); ++s) {
    CHECK(deferred[s].meters.seen == 4 * B);
    CHECK(deferred[s].meters.to_vector() == at_once[s].meters.to_vector());
    const auto p = deferred[s].model->state_dict(), q = at_once[s].model->state_dict();
    for (const auto& [name, t] : q)
      CHECK(p.at(name).to_doubles() == t.to_doubles());  // the training itself is unchanged
  }
  a.step(batch);  // meters complete again when step returns
  CHECK(deferred[0].meters.seen == 5 * B);
}
