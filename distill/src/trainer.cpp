// The trainer's step, the fixed and C-Net weighting policies, and the epoch meters.
#include <mcd/distill/trainer.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <fmt/format.h>

#include <mcd/engine/autograd.h>
#include <mcd/engine/generator.h>
#include <mcd/engine/ops/reduce.h>
#include <mcd/engine/ops/shape_ops.h>
#include <mcd/engine/stream.h>
#include <mcd/models/model_stats.h>

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

std::pair<Tensor, Tensor> FixedWeighting::weights(const WeightInputs& in) {
  const Shape shape = {in.students, in.batch.labels.numel()};
  const Device device = in.batch.images.device();
  return {Tensor::full(shape, alpha_, in.dtype, device),
          Tensor::full(shape, beta_, in.dtype, device)};
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

std::pair<Tensor, Tensor> DgkdWeighting::weights(const WeightInputs& in) {
  const Shape shape = {in.students, in.batch.labels.numel()};
  const Device device = in.batch.images.device();
  return {Tensor::full(shape, 1.0 - a_, in.dtype, device),
          Tensor::full(shape, a_ * static_cast<double>(in.teacher.guides), in.dtype, device)};
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

void CNetWeighting::set_meta_share(int rank, int replicas) {
  MCD_CHECK(replicas >= 1 && rank >= 0 && rank < replicas, "CNetWeighting: share {} of {} replicas",
            rank, replicas);
  share_rank_ = rank;
  shares_ = replicas;
}

std::vector<double> CNetWeighting::prepare_before_step(std::int64_t) {
  data::Batch b;
  auto draw = [&] {
    if (!val_loader_.next(b)) {
      val_loader_.start_epoch(val_loader_.epoch() + 1);
      MCD_CHECK(val_loader_.next(b), "CNetWeighting: the validation split is empty");
    }
  };
  draw();
  if (shares_ > 1) {
    // A batch too small to share (the split's last, a few images) is passed over, as every
    // replica passes it over.
    if (b.labels.numel() < shares_) draw();
    const std::int64_t each = b.labels.numel() / shares_;
    MCD_CHECK(each >= 1, "CNetWeighting: meta batches of {} cannot be shared among {} replicas",
              b.labels.numel(), shares_);
    const std::int64_t from = share_rank_ * each;
    b.images = b.images.slice(0, from, from + each).contiguous();
    b.labels = b.labels.slice(0, from, from + each).contiguous();
  }
  // Into the tensors kept for this shape, in place: a captured meta step reads the batch from
  // there, also after batches of another shape (the split's smaller last one) came between.
  const Device device = nn::model_device(*cnet_);
  LabelledBatch& kept = meta_batches_[b.images.shape()];
  if (kept.images.defined() && kept.labels.shape() == b.labels.shape()) {
    copy_to_device_async(kept.images, b.images);
    copy_to_device_async(kept.labels, b.labels);
  } else {
    kept = {to_device_async(b.images, device), to_device_async(b.labels, device)};
  }
  meta_batch_ = kept;
  std::vector<double> key;
  for (std::int64_t d : b.images.shape())
    key.push_back(static_cast<double>(d));
  return key;
}

std::vector<Tensor> CNetWeighting::before_step_on_device(
    std::vector<Student>& students, const LabelledBatch& batch, const TeacherTargets& teacher,
    const std::vector<StreamRef>& student_lanes) {
  MCD_CHECK(meta_batch_.images.defined(),
            "CNetWeighting: the meta step ran before a meta batch was drawn");
  std::vector<StudentRef> refs;
  for (Student& s : students)
    refs.push_back({s.model.get(), s.optimizer.get()});
  cnet_->train();  // the meta step differentiates the batch-statistics weights
  MetaStepResult r =
      meta_gradient(refs, *cnet_, batch, teacher, meta_batch_, student_lanes, collective_);
  std::vector<Tensor> outputs = std::move(r.cnet_grads);
  outputs.push_back(r.meta_losses);
  return outputs;
}

void CNetWeighting::finish_before_step(const std::vector<Tensor>& outputs) {
  const auto params = cnet_->parameters();
  MCD_CHECK(outputs.size() == params.size() + 1,
            "CNetWeighting: the meta step left {} tensors, expected {}", outputs.size(),
            params.size() + 1);
  for (std::size_t i = 0; i < params.size(); ++i)
    Tensor(params[i]).set_grad(outputs[i]);
  adam_.step();
  adam_.zero_grad();
  ++meta_steps_;
  // A copy: a replay of the meta step rewrites its outputs.
  NoGradGuard no_grad;
  last_meta_losses_ = outputs.back().clone();
}

double CNetWeighting::last_meta_loss() const {
  if (!last_meta_losses_.defined()) return 0.0;
  NoGradGuard no_grad;
  return sum(last_meta_losses_).item();
}

std::pair<Tensor, Tensor> CNetWeighting::weights(const WeightInputs& in) {
  NoGradGuard no_grad;
  cnet_->train(batchnorm_train_);
  const Tensor w =
      cnet_weights(*cnet_, in.batch.images, in.student_logits, in.teacher, in.batch.labels);
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

StudentStreams& Trainer::streams_for(Device device) {
  const std::pair<bool, std::size_t> wanted{concurrent_, shared_lanes_};
  if (!streams_ || streams_->device() != device || lanes_requested_ != wanted) {
    // Students sharing lanes are balanced by their parameter counts, a proxy for their cost.
    std::vector<double> costs;
    for (const Student& s : students_)
      costs.push_back(static_cast<double>(nn::count_parameters(*s.model)));
    streams_ = std::make_unique<StudentStreams>(device, students_.size(), concurrent_,
                                                shared_lanes_, costs);
    lanes_requested_ = wanted;
  }
  streams_->begin_step();
  return *streams_;
}

std::vector<StreamRef> Trainer::student_lanes(const StudentStreams& lanes) const {
  std::vector<StreamRef> out;
  for (std::size_t k = 0; k < students_.size() && lanes.concurrent(); ++k)
    out.push_back(lanes.student(k));
  return out;
}

void Trainer::step(const data::Batch& batch) {
  // Batches arrive on the host; every model of a trainer lives on the students' device.
  const Device device = nn::model_device(*students_.front().model);
  // The host does not wait for a step's end (uploads and deferred meters do not wait), so the
  // last step may still run: a caller that changed its current stream since then gets this
  // step's work queued after it, before anything of this step (the uploads) is.
  const StreamRef main = current_stream(device);
  if (last_main_.device == device && !(last_main_ == main)) stream_wait(main, last_main_);
  last_main_ = main;
  StepRecord record;
  try {
    record = queue_step(batch, device);
  } catch (...) {
    // A step that failed part-way may have left lanes forked, with queued work that reads memory
    // the unwinding has just given back to its stream's cache: main waits for every lane before
    // anything is queued on it again (a lane's next work starts with a fork from main).
    if (streams_) {
      try {
        streams_->join_all();
      } catch (...) {  // a broken device: the first error is the one to report
      }
    }
    // The other replicas would wait for this one's reductions for ever.
    if (collective_ != nullptr && collective_->size() > 1) {
      std::string why = "its step failed";
      try {
        throw;
      } catch (const std::exception& e) {
        why = e.what();
      } catch (...) {
      }
      try {
        collective_->abort(why);
      } catch (...) {
      }
    }
    throw;
  }
  // The step's meters start for the host now; with deferred meters the previous step's are
  // added only now, after this step was queued, so the device never waits for the host.
  PendingMeters pending{HostCopy(record.values), HostCopy(record.predictions),
                        HostCopy(batch.labels)};
  flush_meters();
  if (deferred_meters_)
    pending_meters_ = std::move(pending);
  else
    accumulate_meters(pending);
  ++iteration_;
}

Trainer::StepRecord Trainer::queue_step(const data::Batch& batch, Device device) {
  LabelledBatch on_device;
  auto device_batch = [&]() -> const LabelledBatch& {
    if (!on_device.images.defined())
      on_device = {to_device_async(batch.images, device), to_device_async(batch.labels, device)};
    return on_device;
  };
  // The policy's work before the step (the meta step) reads the teachers' targets and
  // rewrites (then restores) the students' BatchNorm statistics, so the step waits for it.
  // Eagerly, the step reuses its teachers' targets. (streams_for is asked anew each time: a
  // failed capture turns the lanes off.)
  TeacherTargets teacher;
  bool have_teacher = false;
  if (policy_->acts_before_step(iteration_)) {
    const std::vector<double> policy_key = policy_->prepare_before_step(iteration_);
    if (!before_step_by_graph(batch, streams_for(device), policy_key)) {
      const std::vector<Tensor> outputs =
          before_step_on_device(device_batch(), streams_for(device), teacher);
      policy_->finish_before_step(outputs);
      have_teacher = true;
    }
  }
  StepRecord record;
  if (!step_by_graph(batch, streams_for(device), record))
    record = device_step(device_batch(), streams_for(device), have_teacher ? &teacher : nullptr);
  return record;
}

void Trainer::flush_meters() {
  if (!pending_meters_) return;
  PendingMeters pending = std::move(*pending_meters_);
  pending_meters_.reset();
  accumulate_meters(pending);
}

std::vector<Tensor> Trainer::before_step_on_device(const LabelledBatch& lb, StudentStreams& lanes,
                                                   TeacherTargets& teacher) {
  lanes.fork(lanes.teacher());
  {
    const StreamGuard on(lanes.teacher());
    teacher = teacher_targets(lb.images);
  }
  lanes.join(lanes.teacher());
  return policy_->before_step_on_device(students_, lb, teacher, student_lanes(lanes));
}

Trainer::StepRecord Trainer::device_step(const LabelledBatch& lb, StudentStreams& lanes,
                                         const TeacherTargets* given_teacher) {
  // The teachers on their lane, beside the students' forwards. Every tensor that crosses lanes
  // (the batch, the teachers' targets, the logits, the loss's output) lives until the lanes
  // have joined main at the end, so no lane reuses its memory too early.
  TeacherTargets teacher;
  if (given_teacher != nullptr) {
    teacher = *given_teacher;
  } else {
    lanes.fork(lanes.teacher());
    const StreamGuard on(lanes.teacher());
    teacher = teacher_targets(lb.images);
  }

  if (!policy_->weights_need_student_logits()) return students_independently(lb, lanes, teacher);

  // Weights that read every student's logits (the C-Net on image+students): all forwards, then
  // the weights and one fused loss for all students, then every backward.
  const auto K = static_cast<std::int64_t>(students_.size());
  const DType dtype = students_.front().model->parameters().front().dtype();
  std::vector<Tensor> logits;
  lanes.fork_students();
  for (std::size_t k = 0; k < students_.size(); ++k) {
    const StreamGuard on(lanes.student(k));
    students_[k].model->train();
    logits.push_back((*students_[k].model)(lb.images));
  }
  lanes.join(lanes.teacher());
  lanes.join_students();
  const auto [alpha, beta] = policy_->weights({lb, teacher, logits, K, dtype});
  std::vector<Tensor> detached_logits;
  for (const Tensor& z : logits)
    detached_logits.push_back(z.detach());
  const FusedLossOutput out = fused_distill_loss(detached_logits, teacher, lb.labels, alpha, beta);

  // Every student's backward and step; the meters' values stay on the device, so a device runs
  // the whole step without waiting for the host in between.
  // `out` was made on main and is read on every lane: it must outlive join_students() below
  // (it does, as a local), or main could reuse its memory while a lane still reads it.
  std::vector<Tensor> predictions;
  lanes.fork_students();
  for (std::size_t k = 0; k < students_.size(); ++k) {
    const StreamGuard on(lanes.student(k));
    Student& s = students_[k];
    const auto ki = static_cast<std::int64_t>(k);
    s.optimizer->zero_grad();
    backward({logits[k]}, {out.grad_logits.slice(0, ki, ki + 1).squeeze(0)});
    if (collective_ == nullptr) s.optimizer->step();
    predictions.push_back(argmax(detached_logits[k], 1));
  }
  if (collective_ != nullptr) step_averaged(lanes);
  lanes.join_students();
  average_buffers();
  NoGradGuard no_grad;
  return {concat({out.loss.reshape({-1}), out.ce.reshape({-1}), out.kl.reshape({-1}),
                  alpha.reshape({-1}), beta.reshape({-1})},
                 0),
          concat(predictions, 0)};
}

Trainer::StepRecord Trainer::students_independently(const LabelledBatch& lb, StudentStreams& lanes,
                                                    const TeacherTargets& teacher) {
  // Each student's loss and gradient depend only on its own logits, the teachers' targets and
  // its weights, so every student runs its whole step (forward, loss, backward, SGD) alone and
  // this gives the numbers of the joint pass. On one stream one student's graph is alive at a
  // time; on lanes no student waits for another (none waits for the slowest forward before its
  // backward). The weights (the image C-Net, fixed weights) are made on the policy's lane beside
  // the students' forwards.
  const auto K = static_cast<std::int64_t>(students_.size());
  const DType dtype = students_.front().model->parameters().front().dtype();
  std::pair<Tensor, Tensor> weights;
  lanes.fork(lanes.policy());
  {
    const StreamGuard on(lanes.policy());
    weights = policy_->weights({lb, teacher, {}, K, dtype});
  }
  const auto& [alpha, beta] = weights;
  const auto n = static_cast<std::size_t>(K);
  std::vector<Tensor> losses(n), ces(n), kls(n), predictions(n);
  // Students sharing the teachers' or the weights' lane (set_shared_student_streams) last, so
  // that the other lanes wait for the targets and the weights only.
  lanes.fork_students();
  for (const std::size_t sk : lanes.queue_order()) {
    const auto k = static_cast<std::int64_t>(sk);
    const StreamRef lane = lanes.student(sk);
    const StreamGuard on(lane);
    Student& s = students_[sk];
    s.model->train();
    const Tensor z = (*s.model)(lb.images);
    const Tensor zd = z.detach();
    stream_wait(lane, lanes.teacher());  // the teachers' targets
    stream_wait(lane, lanes.policy());   // the weights
    const FusedLossOutput out = fused_distill_loss(
        {zd}, teacher, lb.labels, alpha.slice(0, k, k + 1), beta.slice(0, k, k + 1));
    s.optimizer->zero_grad();
    backward({z}, {out.grad_logits.squeeze(0)});
    if (collective_ == nullptr) s.optimizer->step();  // else below, once averaged
    predictions[sk] = argmax(zd, 1);
    losses[sk] = out.loss.reshape({-1});
    ces[sk] = out.ce.reshape({-1});
    kls[sk] = out.kl.reshape({-1});
  }
  if (collective_ != nullptr) step_averaged(lanes);
  lanes.join(lanes.teacher());
  lanes.join(lanes.policy());
  lanes.join_students();
  average_buffers();
  NoGradGuard no_grad;
  return {concat({concat(losses, 0), concat(ces, 0), concat(kls, 0), alpha.reshape({-1}),
                  beta.reshape({-1})},
                 0),
          concat(predictions, 0)};
}

Trainer::GraphKey Trainer::graph_key(const data::Batch& batch) const {
  GraphKey key;
  for (std::int64_t d : batch.images.shape())
    key.values.push_back(static_cast<double>(d));
  key.values.push_back(static_cast<double>(batch.labels.numel()));
  key.values.push_back(concurrent_ ? 1.0 : 0.0);
  key.values.push_back(static_cast<double>(shared_lanes_));
  // Momentum buffers come into being in a trainer's first step, which always runs eagerly, so
  // a graph always sees them (state loaded after a capture: reset_graphs).
  for (const Student& s : students_)
    key.values.push_back(s.optimizer->lr());
  return key;
}

std::vector<Trainer::HostCounter> Trainer::host_counters() {
  std::vector<nn::Module*> models;
  for (Student& s : students_)
    models.push_back(s.model.get());
  for (auto& t : teachers_)
    models.push_back(t.get());
  for (nn::Module* m : policy_->modules())
    models.push_back(m);
  std::vector<HostCounter> counters;
  for (nn::Module* m : models)
    for (const auto& [name, b] : m->named_buffers())
      if (b.dtype() == DType::Int64 && b.device().is_cpu() && b.is_contiguous()) {
        const auto* v = b.data<std::int64_t>();
        counters.push_back({b, std::vector<std::int64_t>(v, v + b.numel()), {}});
      }
  return counters;
}

void Trainer::reset_graphs() {
  step_graph_ = GraphSlot{};
  before_step_graph_ = GraphSlot{};
  step_outputs_ = {};
  before_step_outputs_.clear();
}

void Trainer::set_collective(Collective* collective) {
  collective_ = collective;
  policy_->set_collective(collective);
  reset_graphs();  // a captured step holds the reductions of the collective it was captured with
}

void Trainer::step_averaged(const StudentStreams& lanes) {
  // Every student's gradient in one reduction on main, after every lane's backward: one NCCL
  // group for all of them, and no lane waits for another's reduction (NCCL runs a
  // communicator's operations one after another, whatever stream they are queued on).
  lanes.join_students();
  std::vector<Tensor> grads;
  for (Student& s : students_) {
    const std::vector<Tensor> g = gradients_of(s.model->parameters());
    grads.insert(grads.end(), g.begin(), g.end());
  }
  collective_->all_reduce_mean(grads);
  lanes.fork_students();
  for (const std::size_t k : lanes.queue_order()) {
    const StreamGuard on(lanes.student(k));
    students_[k].optimizer->step();
  }
}

void Trainer::average_buffers() {
  if (collective_ == nullptr) return;
  std::vector<Tensor> buffers;
  auto add = [&](nn::Module& m) {
    for (const auto& [name, b] : m.named_buffers())
      if (is_floating(b.dtype())) buffers.push_back(b);
  };
  for (Student& s : students_)
    add(*s.model);
  for (nn::Module* m : policy_->modules())
    add(*m);
  collective_->all_reduce_mean(buffers);
}

bool Trainer::step_by_graph(const data::Batch& batch, StudentStreams& lanes, StepRecord& record) {
  if (!policy_->steps_replayable()) return false;
  const bool replayed = replay_or_capture(
      step_graph_, graph_key(batch), batch, lanes,
      [&](const LabelledBatch& in) { step_outputs_ = device_step(in, lanes, nullptr); },
      [&] { step_outputs_ = {}; });
  if (!replayed) return false;
  ++replayed_;
  record = step_outputs_;
  return true;
}

bool Trainer::before_step_by_graph(const data::Batch& batch, StudentStreams& lanes,
                                   const std::vector<double>& policy_key) {
  if (!policy_->before_step_replayable()) return false;
  GraphKey key = graph_key(batch);
  key.values.insert(key.values.end(), policy_key.begin(), policy_key.end());
  const bool replayed = replay_or_capture(
      before_step_graph_, key, batch, lanes,
      [&](const LabelledBatch& in) {
        TeacherTargets teacher;
        before_step_outputs_ = before_step_on_device(in, lanes, teacher);
      },
      [&] { before_step_outputs_.clear(); });
  if (!replayed) return false;
  ++meta_replayed_;
  policy_->finish_before_step(before_step_outputs_);
  return true;
}

bool Trainer::replay_or_capture(GraphSlot& slot, const GraphKey& key, const data::Batch& batch,
                                StudentStreams& lanes,
                                const std::function<void(const LabelledBatch&)>& record,
                                const std::function<void()>& drop_outputs) {
  if (!graphs_ || slot.failed || lanes.device().is_cpu()) return false;
  if (collective_ != nullptr && !collective_->capturable()) return false;
  const bool repeated = key == slot.seen;
  slot.seen = key;
  if (!slot.graph || !(key == slot.key)) {
    // The first run of a kind is eager: it chooses convolution algorithms, creates library
    // handles and optimizer state, none of which a capture may do. A graph of another kind
    // stays until this kind repeats: an epoch's smaller last batch does not cost it.
    if (!repeated) return false;
    slot.graph.reset();  // its memory goes back before a new capture takes any
    drop_outputs();
    // The graph's own copy of the batch (also when the caller's is on the device already: the
    // caller may refill that one while a replay still reads it).
    const Device device = lanes.device();
    auto own = [&](const Tensor& t) { return t.device() == device ? t.clone() : t.to(device); };
    slot.inputs = {own(batch.images), own(batch.labels)};
    slot.counters = host_counters();
    // The step's and the meta step's graphs share their memory: they never run at the same
    // time, and each one's outputs are read before the other replays (the meta step's by the
    // C-Net's Adam step, queued before the step's replay; the step's by the meters' copy to the
    // host, queued on the main stream right after the replay, so before the next meta step's).
    GraphSlot& other = &slot == &step_graph_ ? before_step_graph_ : step_graph_;
    std::string failure;
    try {
      slot.graph = DeviceGraph::capture(
          lanes.main(),
          [&] {
            try {
              record(slot.inputs);
            } catch (...) {
              // A capture must end with every forked lane joined back, or the lanes may go back
              // to the pool still part of it.
              try {
                lanes.join_all();
              } catch (...) {  // the broken capture may refuse the waits too; the first error wins
              }
              throw;
            }
          },
          other.graph.get());
    } catch (const Error& e) {
      failure = e.what();
      slot.graph.reset();
    }
    if (!slot.graph) {
      // The captured code ran on the host: undo what it counted there, and never try again.
      for (HostCounter& c : slot.counters)
        std::copy(c.before.begin(), c.before.end(), c.buffer.data<std::int64_t>());
      slot.failed = true;
      drop_outputs();
      slot.inputs = {};
      // The broken capture's memory is in the pool it shared: it goes back with the other graph,
      // recaptured when its work repeats (the eager runs from now on need that memory).
      other.graph.reset();
      if (!failure.empty() && collective_ != nullptr && collective_->size() > 1)
        // Replicas must capture and replay alike (their reductions must match): one that goes
        // on eagerly would wait for reductions the others replay from their graphs.
        fail(
            "Trainer: capturing {} as a CUDA graph failed on replica {} of {}; the replicas "
            "cannot go on apart. {}",
            &slot == &step_graph_ ? "the step" : "the policy's work before the step",
            collective_->rank(), collective_->size(), failure);
      if (!failure.empty()) {
        // The lanes took part in the broken capture: one stream is the safe way on.
        fmt::print(stderr,
                   "Trainer: capturing {} as a CUDA graph failed; it runs without a graph, and "
                   "everything on one stream, from now on. {}\n",
                   &slot == &step_graph_ ? "the step" : "the policy's work before the step",
                   failure);
        concurrent_ = false;
      }
      return false;
    }
    for (HostCounter& c : slot.counters) {
      const auto* v = c.buffer.data<std::int64_t>();
      for (std::size_t i = 0; i < c.before.size(); ++i)
        c.step.push_back(v[i] - c.before[i]);
    }
    slot.key = key;
    ++captures_;
  } else {
    copy_to_device_async(slot.inputs.images, batch.images);
    copy_to_device_async(slot.inputs.labels, batch.labels);
    for (HostCounter& c : slot.counters) {
      auto* v = c.buffer.data<std::int64_t>();
      for (std::size_t i = 0; i < c.step.size(); ++i)
        v[i] += c.step[i];
    }
  }
  // A capture runs nothing: its first replay is this run.
  slot.graph->replay(lanes.main());
  return true;
}

void Trainer::accumulate_meters(PendingMeters& step) {
  const std::vector<double> values = step.values.get().to_doubles();
  const Tensor& pred = step.predictions.get();
  const std::int64_t* predicted = pred.data<std::int64_t>();
  const Tensor& host_labels = step.labels.get();
  const std::int64_t B = host_labels.numel();
  const auto K = static_cast<std::size_t>(students_.size());
  const auto nb = static_cast<std::size_t>(B);
  const double* loss = values.data();
  const double* ce = loss + K;
  const double* kl = ce + K * nb;
  const double* a = kl + K * nb;
  const double* b = a + K * nb;
  const auto* y = host_labels.data<std::int64_t>();
  for (std::size_t k = 0; k < K; ++k) {
    Meters& m = students_[k].meters;
    const std::int64_t* p = predicted + k * nb;
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
}

}  // namespace mcd::distill
