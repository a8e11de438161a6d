// The meta-gradient against central finite differences of the whole lookahead objective
// M(phi) in float64 (DESIGN.md §3): tiny students with BatchNorm in training mode, momentum
// buffers present and absent, Nesterov on and off, K = 1 and K = 3, every C-Net variant.
// Also: the real students are bit-identical after a meta step.
#include <cmath>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/distill/meta_step.h>
#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/elementwise.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/softmax.h>
#include <mcd/models/registry.h>

#include "support/gradcheck.h"

using namespace mcd;
using mcd::testing::random_tensor;

namespace {

struct Setup {
  std::vector<std::shared_ptr<nn::Module>> models;
  std::vector<std::unique_ptr<optim::Sgd>> opts;
  std::shared_ptr<nn::CNet> cnet;
  distill::LabelledBatch train, val;
  distill::TeacherTargets teacher;

  std::vector<distill::StudentRef> refs() const {
    std::vector<distill::StudentRef> r;
    for (std::size_t k = 0; k < models.size(); ++k)
      r.push_back({models[k].get(), opts[k].get()});
    return r;
  }
};

struct Variant {
  std::string name;
  int K;
  nn::CNetInput input;
  nn::CNetHead head;
  bool buffers;
  bool nesterov;
  double dampening;
};

Tensor labels(std::int64_t n, std::int64_t classes, Generator& gen) {
  std::vector<std::int64_t> y;
  for (std::int64_t i = 0; i < n; ++i)
    y.push_back(static_cast<std::int64_t>(gen.below(classes)));
  return Tensor::from_vector(y, {n});
}

Setup make_setup(const Variant& v, std::uint64_t seed) {
  constexpr std::int64_t kClasses = 4, kSize = 8, kB = 6, kBv = 5;
  Generator gen(seed);
  Setup s;
  const std::vector<std::string> archs = {"resnet10_xxxs", "resnet10_xxs", "resnet10_xxxs"};
  for (int k = 0; k < v.K; ++k) {
    auto m = nn::make_model(archs[k], {1, kClasses, kSize}, gen);
    m->to(DType::Float64);
    m->train();
    optim::SgdOptions o;
    o.lr = 0.3 + 0.1 * k;
    o.momentum = 0.9;
    o.dampening = v.dampening;
    o.weight_decay = 5e-4;
    o.nesterov = v.nesterov;
    auto opt = std::make_unique<optim::Sgd>(m->parameters(), o);
    if (v.buffers) {  // one step with random gradients creates the momentum buffers
      for (auto& p : m->parameters())
        Tensor(p).set_grad(mul(random_tensor(p.shape(), gen), 0.1));
      opt->step();
      opt->zero_grad();
    }
    s.models.push_back(m);
    s.opts.push_back(std::move(opt));
  }
  nn::CNetConfig c;
  c.input = v.input;
  c.head = v.head;
  c.num_students = v.K;
  c.backbone = "resnet10_xxxs";
  c.image = {1, 0, kSize};
  s.cnet = std::make_shared<nn::CNet>(c, gen);
  s.cnet->to(DType::Float64);
  s.cnet->train();
  s.train = {random_tensor({kB, 1, kSize, kSize}, gen), labels(kB, kClasses, gen)};
  s.val = {random_tensor({kBv, 1, kSize, kSize}, gen), labels(kBv, kClasses, gen)};
  s.teacher = distill::make_teacher_targets(mul(random_tensor({kB, kClasses}, gen), 3.0), 2.0);
  return s;
}

// The oracle: M(phi) = sum_k mean_j ce(S_k(xv; theta'_k), yv), evaluated directly.
double lookahead_objective(Setup& s) {
  const std::size_t K = s.models.size();
  std::vector<Tensor> plain_logits;
  {
    NoGradGuard ng;
    for (auto& m : s.models) {
      std::vector<Tensor> saved;
      for (auto& [n, b] : m->named_buffers())
        saved.push_back(b.clone());
      plain_logits.push_back((*m)(s.train.images));
      std::size_t i = 0;
      for (auto& [n, b] : m->named_buffers())
        Tensor(b).copy_(saved[i++]);
    }
  }
  Tensor w;
  {
    NoGradGuard ng;
    w = distill::cnet_weights(*s.cnet, s.train.images, plain_logits, s.teacher, s.train.labels);
  }
  const Tensor alpha = distill::alpha_of(w), beta = distill::beta_of(w);
  double total = 0;
  for (std::size_t k = 0; k < K; ++k) {
    nn::Module& m = *s.models[k];
    std::vector<Tensor> saved_buffers;
    for (auto& [n, b] : m.named_buffers())
      saved_buffers.push_back(b.clone());
    const auto params = m.parameters();
    const Tensor z = m(s.train.images);
    const auto ki = static_cast<std::int64_t>(k);
    const auto out =
        distill::fused_distill_loss({z.detach()}, s.teacher, s.train.labels,
                                    alpha.slice(0, ki, ki + 1), beta.slice(0, ki, ki + 1));
    const auto g = grad({z}, params, {out.grad_logits.squeeze(0)});
    std::vector<Tensor> saved;
    NoGradGuard ng;
    for (std::size_t i = 0; i < params.size(); ++i) {
      saved.push_back(params[i].clone());
      Tensor(params[i]).add_(s.opts[k]->lookahead_direction(i, g[i]), -s.opts[k]->lr());
    }
    total += mean(cross_entropy(m(s.val.images), s.val.labels)).item();
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).copy_(saved[i]);
    std::size_t i = 0;
    for (auto& [n, b] : m.named_buffers())
      Tensor(b).copy_(saved_buffers[i++]);
  }
  return total;
}

// Central difference of the objective along `direction` over the C-Net params. The step is
// small because the C-Net has ReLUs: a larger one crosses kinks of some activation.
double directional_fd(Setup& s, const std::vector<Tensor>& direction, double h) {
  const auto params = s.cnet->parameters();
  auto at = [&](double t) {
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).add_(direction[i], t);
    const double m = lookahead_objective(s);
    for (std::size_t i = 0; i < params.size(); ++i)
      Tensor(params[i]).add_(direction[i], -t);
    return m;
  };
  return (at(h) - at(-h)) / (2 * h);
}

std::vector<double> snapshot(Setup& s) {
  std::vector<double> all;
  for (std::size_t k = 0; k < s.models.size(); ++k) {
    for (const auto& [n, t] : s.models[k]->state_dict())
      for (double v : t.to_doubles())
        all.push_back(v);
    for (const auto& [n, t] : s.opts[k]->state_dict())
      for (double v : t.to_doubles())
        all.push_back(v);
    for (const auto& p : s.models[k]->parameters())
      all.push_back(p.grad().defined() ? 1.0 : 0.0);
  }
  return all;
}

}  // namespace

TEST_CASE("meta-gradient equals finite differences of the lookahead objective", "[meta]") {
  const std::vector<Variant> variants = {
      {"K=1 image sigmoid, no buffers", 1, nn::CNetInput::Image, nn::CNetHead::Sigmoid, false,
       false, 0.0},
      {"K=1 image sigmoid, buffers, Nesterov", 1, nn::CNetInput::Image, nn::CNetHead::Sigmoid, true,
       true, 0.0},
      {"K=3 image+students sigmoid, buffers, dampening", 3, nn::CNetInput::ImageStudents,
       nn::CNetHead::Sigmoid, true, false, 0.1},
      {"K=3 image official, no buffers, Nesterov", 3, nn::CNetInput::Image, nn::CNetHead::Official,
       false, true, 0.0},
      {"K=3 image sigmoid, buffers, Nesterov", 3, nn::CNetInput::Image, nn::CNetHead::Sigmoid, true,
       true, 0.0},
  };
  std::uint64_t seed = 100;
  for (const Variant& v : variants) {
    INFO(v.name);
    Setup s = make_setup(v, seed++);
    const std::vector<double> before = snapshot(s);
    const auto r = distill::meta_gradient(s.refs(), *s.cnet, s.train, s.teacher, s.val);
    // The real students are bit-identical, momentum buffers and .grad included.
    CHECK(snapshot(s) == before);
    CHECK(sum(r.meta_losses).item() == Approx(lookahead_objective(s)).epsilon(1e-12));

    // Along a random direction over every C-Net parameter at once.
    Generator gen(seed * 7);
    const auto params = s.cnet->parameters();
    std::vector<Tensor> u;
    double analytic = 0, grad_max = 0;
    double norm2 = 0;
    for (std::size_t i = 0; i < params.size(); ++i) {
      u.push_back(random_tensor(params[i].shape(), gen));
      norm2 += sum(mul(u.back(), u.back())).item();
    }
    for (auto& t : u)
      t.mul_(1.0 / std::sqrt(norm2));  // a unit direction
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto g = r.cnet_grads[i].to_doubles(), d = u[i].to_doubles();
      for (std::size_t j = 0; j < g.size(); ++j) {
        analytic += g[j] * d[j];
        grad_max = std::max(grad_max, std::abs(g[j]));
      }
    }
    const double numeric = directional_fd(s, u, 1e-6);
    INFO(fmt::format("directional: numeric {:.15g} analytic {:.15g}", numeric, analytic));
    CHECK(std::abs(numeric - analytic) <= 1e-6 * std::abs(analytic));
    REQUIRE(grad_max > 0);

    // Element by element: two random entries of every C-Net parameter tensor.
    const auto named = s.cnet->named_parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      for (int rep = 0; rep < 2; ++rep) {
        const std::int64_t j = static_cast<std::int64_t>(gen.below(params[i].numel()));
        std::vector<Tensor> e;
        for (std::size_t q = 0; q < params.size(); ++q)
          e.push_back(Tensor::zeros(params[q].shape(), DType::Float64));
        e[i].reshape({-1}).slice(0, j, j + 1).fill_(1.0);
        const double num = directional_fd(s, e, 1e-6);
        const double ana = r.cnet_grads[i].to_doubles()[j];
        INFO(fmt::format("{}[{}]: numeric {:.15g} analytic {:.15g}", named[i].first, j, num, ana));
        CHECK(std::abs(num - ana) <= 1e-6 * (std::abs(ana) + 1e-3 * grad_max));
      }
    }
  }
}

TEST_CASE("a meta step that fails part-way leaves the students at theta", "[meta]") {
  // The lookahead parameters theta' are written into the students themselves for the meta loss;
  // a failure there (here: a held-out label out of range) must not leave them behind.
  const Variant v{"failing", 2, nn::CNetInput::Image, nn::CNetHead::Sigmoid, true, false, 0.0};
  Setup s = make_setup(v, 41);
  const std::vector<double> before = snapshot(s);
  s.val.labels = Tensor::from_vector(std::vector<std::int64_t>{0, 1, 4, 2, 3}, {5});
  CHECK_THROWS_WITH(distill::meta_gradient(s.refs(), *s.cnet, s.train, s.teacher, s.val),
                    Catch::Contains("4"));
  CHECK(snapshot(s) == before);
}

TEST_CASE("the meta step updates the C-Net's BatchNorm statistics as one forward does", "[meta]") {
  // The meta step runs the C-Net twice (without and with a graph) and must leave its running
  // statistics and counters as one training-mode forward on the batch leaves them.
  for (const nn::CNetInput input : {nn::CNetInput::Image, nn::CNetInput::ImageStudents}) {
    const Variant v{"buffers", 2, input, nn::CNetHead::Sigmoid, true, false, 0.0};
    Setup meta = make_setup(v, 31), once = make_setup(v, 31);
    distill::meta_gradient(meta.refs(), *meta.cnet, meta.train, meta.teacher, meta.val);
    {
      NoGradGuard ng;
      std::vector<Tensor> logits;
      for (auto& m : once.models) {
        std::vector<Tensor> saved;
        for (auto& [n, b] : m->named_buffers())
          saved.push_back(b.clone());
        logits.push_back((*m)(once.train.images));
        std::size_t i = 0;
        for (auto& [n, b] : m->named_buffers())
          Tensor(b).copy_(saved[i++]);
      }
      distill::cnet_weights(*once.cnet, once.train.images, logits, once.teacher, once.train.labels);
    }
    const auto a = meta.cnet->named_buffers(), b = once.cnet->named_buffers();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].first);
      CHECK(a[i].second.to_doubles() == b[i].second.to_doubles());
    }
  }
}
