// The trainer's step, the fixed and C-Net weighting policies, and the epoch meters.
#include <mcd/distill/trainer.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>

namespace mcd::distill {

// ---- Meters

double Meters::spread(double sum, double sum_sq) const {
  if (seen == 0) return 0.0;
  const double m = sum / static_cast<double>(seen);
  return std::sqrt(std::max(0.0, sum_sq / static_cast<double>(seen) - m * m));
}

std::size_t Meters::weight_bin(double w) {
  if (!(w >= 0.0)) return 0;  // negative (or NaN) weights join the first bin
  if (w >= 1.0) return kWeightBins - 1;
  return std::min(kWeightBins - 2, static_cast<std::size_t>(w * (kWeightBins - 1)));
}

// 9 scalars then the two histograms. Checkpoints from before the histograms hold the 9
// scalars alone; they load with empty histograms.
std::vector<double> Meters::to_vector() const {
  std::vector<double> v = {loss,
                           ce,
                           kl,
                           alpha,
                           alpha_sq,
                           beta,
                           beta_sq,
                           static_cast<double>(correct),
                           static_cast<double>(seen)};
  for (const Histogram* h : {&alpha_hist, &beta_hist})
    for (std::int64_t c : *h)
      v.push_back(static_cast<double>(c));
  return v;
}

Meters Meters::from_vector(const std::vector<double>& v) {
  constexpr std::size_t kScalars = 9, kAll = kScalars + 2 * kWeightBins;
  MCD_CHECK(v.size() == kScalars || v.size() == kAll, "Meters: expected {} or {} values, got {}",
            kScalars, kAll, v.size());
  Meters m;
  m.loss = v[0], m.ce = v[1], m.kl = v[2], m.alpha = v[3], m.alpha_sq = v[4], m.beta = v[5],
  m.beta_sq = v[6];
  m.correct = static_cast<std::int64_t>(v[7]);
  m.seen = static_cast<std::int64_t>(v[8]);
  if (v.size() == kAll)
    for (std::size_t b = 0; b < kWeightBins; ++b) {
      m.alpha_hist[b] = static_cast<std::int64_t>(v[kScalars + b]);
      m.beta_hist[b] = static_cast<std::int64_t>(v[kScalars + kWeightBins + b]);
    }
  return m;
}

// ---- guides

std::vector<std::size_t> WeightingPolicy::select_guides(std::int64_t, std::size_t available) {
  std::vector<std::size_t> all(available);
  std::iota(all.begin(), all.end(), std::size_t{0});
  return all;
}

// ---- fixed weights

FixedWeighting::FixedWeighting(std::string name, double alpha, double beta)
    : name_(std::move(name)), alpha_(alpha), beta_(beta) {}

std::pair<Tensor, Tensor> FixedWeighting::weights(const LabelledBatch& batch, const TeacherTargets&,
                                                  const std::vector<Tensor>& student_logits) {
  const Shape shape = {static_cast<std::int64_t>(student_logits.size()), batch.labels.numel()};
  const DType dtype = student_logits.at(0).dtype();
  const Device device = student_logits[0].device();
  return {Tensor::full(shape, alpha_, dtype, device), Tensor::full(shape, beta_, dtype, device)};
}

std::unique_ptr<WeightingPolicy> ce_weighting() {
  return std::make_unique<FixedWeighting>("ce", 1.0, 0.0);
}

std::unique_ptr<WeightingPolicy> kd_weighting(double a) {
  MCD_CHECK(a >= 0.0 && a <= 1.0, "kd_weighting: kd_alpha must be in [0, 1], got {}", a);
  return std::make_unique<FixedWeighting>("kd", 1.0 - a, a);
}

// ---- DGKD

DgkdWeighting::DgkdWeighting(double a, std::int64_t drop, std::uint64_t seed)
    : a_(a), drop_(drop), seed_(seed) {
  MCD_CHECK(a >= 0.0 && a <= 1.0, "DgkdWeighting: kd_alpha must be in [0, 1], got {}", a);
  MCD_CHECK(drop >= 0, "DgkdWeighting: the number of guides to drop must be >= 0, got {}", drop);
}

std::vector<std::size_t> DgkdWeighting::select_guides(std::int64_t iteration,
                                                      std::size_t available) {
  std::vector<std::size_t> kept = WeightingPolicy::select_guides(iteration, available);
  const auto drop = std::min(static_cast<std::size_t>(drop_), available - 1);
  Generator gen(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(iteration));
  for (std::size_t d = 0; d < drop; ++d)
    kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(gen.below(kept.size())));
  return kept;
}

std::pair<Tensor, Tensor> DgkdWeighting::weights(const LabelledBatch& batch,
                                                 const TeacherTargets& teacher,
                                                 const std::vector<Tensor>& student_logits) {
  const Shape shape = {static_cast<std::int64_t>(student_logits.size()), batch.labels.numel()};
  const DType dtype = student_logits.at(0).dtype();
  const Device device = student_logits[0].device();
  return {Tensor::full(shape, 1.0 - a_, dtype, device),
          Tensor::full(shape, a_ * static_cast<double>(teacher.guides), dtype, device)};
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
  const Device device = nn::model_device(*cnet_);
  return {b.images.to(device), b.labels.to(device)};
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

Trainer::Trainer(std::vector<Student>& students, std::vector<std::shared_ptr<nn::Module>> teachers,
                 std::unique_ptr<WeightingPolicy> policy, double tau)
    : students_(students), teachers_(std::move(teachers)), policy_(std::move(policy)), tau_(tau) {
  MCD_CHECK(!students_.empty(), "Trainer: no students");
  for (std::size_t j = 0; j < teachers_.size(); ++j)
    MCD_CHECK(teachers_[j] != nullptr, "Trainer: teacher {} is null", j);
  MCD_CHECK(!policy_->needs_teacher() || !teachers_.empty(), "Trainer: method '{}' needs a teacher",
            policy_->name());
}

Trainer::Trainer(std::vector<Student>& students, std::shared_ptr<nn::Module> teacher,
                 std::unique_ptr<WeightingPolicy> policy, double tau)
    : Trainer(students,
              teacher ? std::vector<std::shared_ptr<nn::Module>>{std::move(teacher)}
                      : std::vector<std::shared_ptr<nn::Module>>{},
              std::move(policy), tau) {}

TeacherTargets Trainer::teacher_targets(const Tensor& images) {
  if (teachers_.empty() || !policy_->needs_teacher()) return no_teacher(tau_);
  const std::vector<std::size_t> guides = policy_->select_guides(iteration_, teachers_.size());
  MCD_CHECK(!guides.empty(), "Trainer: method '{}' chose no teacher for iteration {}",
            policy_->name(), iteration_);
  NoGradGuard no_grad;
  std::vector<Tensor> logits;
  for (std::size_t j : guides) {
    MCD_CHECK(j < teachers_.size(), "Trainer: method '{}' chose teacher {} of {}", policy_->name(),
              j, teachers_.size());
    teachers_[j]->eval();
    logits.push_back((*teachers_[j])(images));
  }
  return make_mixture_targets(logits, tau_);
}

void Trainer::step(const data::Batch& batch) {
  // Batches arrive on the host; every model of a trainer lives on the students' device.
  const Device device = nn::model_device(*students_.front().model);
  const LabelledBatch lb{batch.images.to(device), batch.labels.to(device)};
  const TeacherTargets teacher = teacher_targets(lb.images);
  policy_->before_step(iteration_, students_, lb, teacher);

  std::vector<Tensor> logits;
  for (Student& s : students_) {
    s.model->train();
    logits.push_back((*s.model)(lb.images));
  }
  const auto [alpha, beta] = policy_->weights(lb, teacher, logits);
  std::vector<Tensor> detached_logits;
  for (const Tensor& z : logits)
    detached_logits.push_back(z.detach());
  const FusedLossOutput out = fused_distill_loss(detached_logits, teacher, lb.labels, alpha, beta);

  // Every student's backward and step first; the meters' values come back in two copies at
  // the end, so a device runs the whole step without waiting for the host in between.
  const std::int64_t B = batch.labels.numel();
  std::vector<Tensor> predictions;
  for (std::size_t k = 0; k < students_.size(); ++k) {
    Student& s = students_[k];
    const auto ki = static_cast<std::int64_t>(k);
    s.optimizer->zero_grad();
    backward({logits[k]}, {out.grad_logits.slice(0, ki, ki + 1).squeeze(0)});
    s.optimizer->step();
    predictions.push_back(argmax(detached_logits[k], 1));
  }
  std::vector<double> values;
  std::vector<std::int64_t> predicted;
  {
    NoGradGuard no_grad;
    const Tensor all = concat({out.loss.reshape({-1}), out.ce.reshape({-1}), out.kl.reshape({-1}),
                               alpha.reshape({-1}), beta.reshape({-1})},
                              0);
    values = all.to_doubles();
    const Tensor pred = concat(predictions, 0).to(Device::cpu());
    predicted.assign(pred.data<std::int64_t>(), pred.data<std::int64_t>() + pred.numel());
  }
  const auto K = static_cast<std::size_t>(students_.size());
  const auto nb = static_cast<std::size_t>(B);
  const double* loss = values.data();
  const double* ce = loss + K;
  const double* kl = ce + K * nb;
  const double* a = kl + K * nb;
  const double* b = a + K * nb;
  const Tensor host_labels = batch.labels.to(Device::cpu());
  const auto* y = host_labels.data<std::int64_t>();
  for (std::size_t k = 0; k < K; ++k) {
    Meters& m = students_[k].meters;
    const std::int64_t* p = predicted.data() + k * nb;
    for (std::int64_t i = 0; i < B; ++i) {
      const std::size_t at = k * nb + static_cast<std::size_t>(i);
      m.correct += p[i] == y[i];
      m.ce += ce[at];
      m.kl += kl[at];
      m.alpha += a[at];
      m.alpha_sq += a[at] * a[at];
      m.beta += b[at];
      m.beta_sq += b[at] * b[at];
      ++m.alpha_hist[Meters::weight_bin(a[at])];
      ++m.beta_hist[Meters::weight_bin(b[at])];
    }
    m.loss += loss[k] * static_cast<double>(B);
    m.seen += B;
  }
  ++iteration_;
}

}  // namespace mcd::distill
