// The trainer's step, the fixed and C-Net weighting policies, and the epoch meters.
#include <mcd/distill/trainer.h>

#include <cmath>

#include <mcd/engine/autograd.h>
#include <mcd/engine/ops/reduce.h>

namespace mcd::distill {

// ---- Meters

double Meters::spread(double sum, double sum_sq) const {
  if (seen == 0) return 0.0;
  const double m = sum / static_cast<double>(seen);
  return std::sqrt(std::max(0.0, sum_sq / static_cast<double>(seen) - m * m));
}

std::vector<double> Meters::to_vector() const {
  return {loss,
          ce,
          kl,
          alpha,
          alpha_sq,
          beta,
          beta_sq,
          static_cast<double>(correct),
          static_cast<double>(seen)};
}

Meters Meters::from_vector(const std::vector<double>& v) {
  MCD_CHECK(v.size() == 9, "Meters: expected 9 values, got {}", v.size());
  Meters m;
  m.loss = v[0], m.ce = v[1], m.kl = v[2], m.alpha = v[3], m.alpha_sq = v[4], m.beta = v[5],
  m.beta_sq = v[6];
  m.correct = static_cast<std::int64_t>(v[7]);
  m.seen = static_cast<std::int64_t>(v[8]);
  return m;
}

// ---- fixed weights

FixedWeighting::FixedWeighting(std::string name, double alpha, double beta)
    : name_(std::move(name)), alpha_(alpha), beta_(beta) {}

std::pair<Tensor, Tensor> FixedWeighting::weights(const LabelledBatch& batch, const TeacherTargets&,
                                                  const std::vector<Tensor>& student_logits) {
  const Shape shape = {static_cast<std::int64_t>(student_logits.size()), batch.labels.numel()};
  const DType dtype = student_logits.at(0).dtype();
  return {Tensor::full(shape, alpha_, dtype), Tensor::full(shape, beta_, dtype)};
}

std::unique_ptr<WeightingPolicy> ce_weighting() {
  return std::make_unique<FixedWeighting>("ce", 1.0, 0.0);
}

std::unique_ptr<WeightingPolicy> kd_weighting(double a) {
  MCD_CHECK(a >= 0.0 && a <= 1.0, "kd_weighting: kd_alpha must be in [0, 1], got {}", a);
  return std::make_unique<FixedWeighting>("kd", 1.0 - a, a);
}

// ---- C-Net weights and the meta step

CNetWeighting::CNetWeighting(std::shared_ptr<nn::CNet> cnet, optim::AdamOptions adam,
                             std::int64_t meta_interval, data::BatchIterator val_loader,
                             bool batchnorm_train)
    : cnet_(std::move(cnet)),
      adam_(cnet_->parameters(), adam),
      meta_interval_(meta_interval),
      val_loader_(std::move(val_loader)),
      batchnorm_train_(batchnorm_train) {
  MCD_CHECK(meta_interval_ >= 1, "CNetWeighting: meta_interval must be >= 1, got {}",
            meta_interval_);
}

LabelledBatch CNetWeighting::next_meta_batch() {
  data::Batch b;
  if (!val_loader_.next(b)) {
    val_loader_.start_epoch(val_loader_.epoch() + 1);
    MCD_CHECK(val_loader_.next(b), "CNetWeighting: the validation split is empty");
  }
  return {b.images, b.labels};
}

void CNetWeighting::before_step(std::int64_t iteration, std::vector<Student>& students,
                                const LabelledBatch& batch, const TeacherTargets& teacher) {
  if (iteration % meta_interval_ != 0) return;
  std::vector<StudentRef> refs;
  for (Student& s : students)
    refs.push_back({s.model.get(), s.optimizer.get()});
  const LabelledBatch val = next_meta_batch();
  cnet_->train();  // the meta step differentiates the batch-statistics weights
  MetaStepResult r = meta_gradient(refs, *cnet_, batch, teacher, val);
  const auto params = cnet_->parameters();
  for (std::size_t i = 0; i < params.size(); ++i)
    Tensor(params[i]).set_grad(r.cnet_grads[i]);
  adam_.step();
  adam_.zero_grad();
  ++meta_steps_;
  last_meta_loss_ = sum(r.meta_losses).item();
}

std::pair<Tensor, Tensor> CNetWeighting::weights(const LabelledBatch& batch,
                                                 const TeacherTargets& teacher,
                                                 const std::vector<Tensor>& student_logits) {
  NoGradGuard no_grad;
  cnet_->train(batchnorm_train_);
  const Tensor w = cnet_weights(*cnet_, batch.images, student_logits, teacher, batch.labels);
  return {alpha_of(w), beta_of(w)};
}

StateDict CNetWeighting::state_dict() const {
  StateDict s;
  for (const auto& [k, v] : cnet_->state_dict())
    s["cnet." + k] = v;
  for (const auto& [k, v] : adam_.state_dict())
    s["adam." + k] = v;
  s["val_loader"] = Tensor::from_vector<std::int64_t>(
      {val_loader_.epoch(), val_loader_.position(), meta_steps_}, {3});
  return s;
}

void CNetWeighting::load_state_dict(const StateDict& state, const std::string& source) {
  StateDict cnet_state, adam_state;
  for (const auto& [k, v] : state) {
    if (k.rfind("cnet.", 0) == 0)
      cnet_state[k.substr(5)] = v;
    else if (k.rfind("adam.", 0) == 0)
      adam_state[k.substr(5)] = v;
  }
  auto it = state.find("val_loader");
  MCD_CHECK(it != state.end() && it->second.numel() == 3 && it->second.dtype() == DType::Int64,
            "{}: C-Net state lacks 'val_loader' (int64, 3 values)", source);
  cnet_->load_state_dict(cnet_state, source);
  adam_.load_state_dict(adam_state, source);
  const auto* v = it->second.data<std::int64_t>();
  val_loader_.restore(v[0], v[1]);
  meta_steps_ = v[2];
}

// ---- the trainer

Trainer::Trainer(std::vector<Student>& students, std::shared_ptr<nn::Module> teacher,
                 std::unique_ptr<WeightingPolicy> policy, double tau)
    : students_(students), teacher_(std::move(teacher)), policy_(std::move(policy)), tau_(tau) {
  MCD_CHECK(!students_.empty(), "Trainer: no students");
  MCD_CHECK(!policy_->needs_teacher() || teacher_ != nullptr,
            "Trainer: method '{}' needs a teacher", policy_->name());
}

void Trainer::step(const data::Batch& batch) {
  const LabelledBatch lb{batch.images, batch.labels};
  TeacherTargets teacher = no_teacher(tau_);
  if (teacher_ && policy_->needs_teacher()) {
    NoGradGuard no_grad;
    teacher_->eval();
    teacher = make_teacher_targets((*teacher_)(batch.images), tau_);
  }
  policy_->before_step(iteration_, students_, lb, teacher);

  std::vector<Tensor> logits;
  for (Student& s : students_) {
    s.model->train();
    logits.push_back((*s.model)(batch.images));
  }
  const auto [alpha, beta] = policy_->weights(lb, teacher, logits);
  std::vector<Tensor> detached_logits;
  for (const Tensor& z : logits)
    detached_logits.push_back(z.detach());
  const FusedLossOutput out =
      fused_distill_loss(detached_logits, teacher, batch.labels, alpha, beta);

  const std::int64_t B = batch.labels.numel();
  const auto loss = out.loss.to_doubles();
  const auto ce = out.ce.to_doubles(), kl = out.kl.to_doubles();
  const auto a = alpha.to_doubles(), b = beta.to_doubles();
  const auto* y = batch.labels.data<std::int64_t>();
  for (std::size_t k = 0; k < students_.size(); ++k) {
    Student& s = students_[k];
    const auto ki = static_cast<std::int64_t>(k);
    s.optimizer->zero_grad();
    backward({logits[k]}, {out.grad_logits.slice(0, ki, ki + 1).squeeze(0)});
    s.optimizer->step();

    Meters& m = s.meters;
    const Tensor pred = argmax(detached_logits[k], 1);
    const auto* p = pred.data<std::int64_t>();
    for (std::int64_t i = 0; i < B; ++i) {
      const std::size_t at = k * static_cast<std::size_t>(B) + static_cast<std::size_t>(i);
      m.correct += p[i] == y[i];
      m.ce += ce[at];
      m.kl += kl[at];
      m.alpha += a[at];
      m.alpha_sq += a[at] * a[at];
      m.beta += b[at];
      m.beta_sq += b[at] * b[at];
    }
    m.loss += loss[k] * static_cast<double>(B);
    m.seen += B;
  }
  ++iteration_;
}

}  // namespace mcd::distill
