// One trainer for every method: K students learn from an optional frozen teacher through the
// fused loss, with per-sample weights from a pluggable WeightingPolicy:
//   CE        alpha = 1, beta = 0, no teacher (teacher training, warm start, the CE baseline)
//   KD        alpha = 1 - a, beta = a (Hinton: (1 - a) CE + a tau^2 KL)
//   MC-Distil weights from the C-Net, itself trained by the lookahead meta step every L
//             iterations (meta_step.h), before that iteration's normal step
//   DGKD      several teachers at once (every larger trained model), some dropped at random
//             each iteration; TAKD is a chain of KD stages, each with the previous as teacher
// The teachers' logits are computed once per batch and shared by the meta step and the step
// (on a device with graphs, the replayed step computes its own).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <mcd/data/loader.h>
#include <mcd/distill/fused_loss.h>
#include <mcd/distill/meta_step.h>
#include <mcd/distill/student_streams.h>
#include <mcd/engine/collective.h>
#include <mcd/engine/graph.h>
#include <mcd/engine/optim/adam.h>
#include <mcd/engine/optim/lr_schedule.h>
#include <mcd/engine/optim/sgd.h>
#include <mcd/engine/transfer.h>
#include <mcd/models/cnet.h>
#include <mcd/models/module.h>

namespace mcd::distill {

// Running sums over an epoch; saved in checkpoints so a resumed epoch reports the same.
struct Meters {
  // Histograms of the per-sample weights: 20 bins of width 0.05 over [0, 1), then [1, inf).
  static constexpr std::size_t kWeightBins = 21;
  using Histogram = std::array<std::int64_t, kWeightBins>;
  static std::size_t weight_bin(double w);

  double loss = 0, ce = 0, kl = 0;                        // sums of batch means times batch size
  double alpha = 0, alpha_sq = 0, beta = 0, beta_sq = 0;  // sums over samples
  std::int64_t correct = 0, seen = 0;
  Histogram alpha_hist{}, beta_hist{};
  void reset() { *this = Meters(); }
  double mean(double sum) const { return seen > 0 ? sum / static_cast<double>(seen) : 0.0; }
  double spread(double sum, double sum_sq) const;  // standard deviation over samples
  std::vector<double> to_vector() const;
  static Meters from_vector(const std::vector<double>& v);
};

struct Student {
  std::string name;
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::Sgd> optimizer;
  std::unique_ptr<optim::LrSchedule> schedule;  // evaluated per epoch
  Meters meters;
};

// What the per-sample weights of a step are computed from.
struct WeightInputs {
  const LabelledBatch& batch;
  const TeacherTargets& teacher;
  // The K students' logits on the batch; empty when the policy's weights do not need them
  // (WeightingPolicy::weights_need_student_logits), which the trainer then asks for before
  // any student runs.
  const std::vector<Tensor>& student_logits;
  std::int64_t students;  // K
  DType dtype;            // the students' floating type
};

class WeightingPolicy {
 public:
  virtual ~WeightingPolicy() = default;
  virtual std::string name() const = 0;
  virtual bool needs_teacher() const = 0;
  // Which of the trainer's teachers guide `iteration` (indices into its list, at least one);
  // all of them by default.
  virtual std::vector<std::size_t> select_guides(std::int64_t iteration, std::size_t available);
  // Whether every iteration outside before_step queues the same device work, given the same
  // batch shape and learning rates, so that a captured step can be replayed (a CUDA graph).
  virtual bool steps_replayable() const { return true; }
  // Models the policy runs during a step besides the trainer's (the C-Net).
  virtual std::vector<nn::Module*> modules() { return {}; }
  // Whether the policy works before the normal step of `iteration` (counted over the whole
  // stage): the meta step. That work comes in three parts, so that the device part can be
  // captured as a graph and replayed like the step:
  //   prepare_before_step: the host's part first (drawing the meta batch into tensors the
  //     policy keeps, refilled in place). Returns what the device part's work depends on besides
  //     the trainer's batch shape and learning rates (its inputs' shapes): equal values, same
  //     device work.
  //   before_step_on_device: device work only, on the caller's stream, after the teachers'
  //     targets; `student_lanes` holds one stream per student for work that may run side by
  //     side (empty: everything on the caller's stream). It must not read device values on the
  //     host nor decide on the host anything that changes between calls. Returns what the last
  //     part needs (a replay rewrites the returned tensors in place).
  //   finish_before_step: the host's part after the device part ran or was replayed (optimizer
  //     steps with coefficients computed on the host, counters).
  virtual bool acts_before_step(std::int64_t iteration) const { return false; }
  virtual std::vector<double> prepare_before_step(std::int64_t iteration) { return {}; }
  virtual std::vector<Tensor> before_step_on_device(std::vector<Student>& students,
                                                    const LabelledBatch& batch,
                                                    const TeacherTargets& teacher,
                                                    const std::vector<StreamRef>& student_lanes) {
    return {};
  }
  virtual void finish_before_step(const std::vector<Tensor>& outputs) {}
  // Whether before_step_on_device keeps those rules, so that it may be captured as a graph.
  virtual bool before_step_replayable() const { return false; }
  // Whether weights() reads the students' logits. When it does not, the weights are made before
  // the students run and read only the batch and the teachers' host fields (guides, tau), not
  // their targets, and each student then runs its whole step (forward, loss, backward, step)
  // alone: on one stream one at a time, so that one student's activations are alive at a time;
  // with a stream per student side by side, none waiting for another, and the weights on a
  // lane of their own beside them.
  virtual bool weights_need_student_logits() const { return false; }
  // alpha and beta (K, B), detached, on the batch's device.
  virtual std::pair<Tensor, Tensor> weights(const WeightInputs& in) = 0;
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state, const std::string& source) {}
  // The replicas' collective (Trainer::set_collective), for a policy that computes gradients of
  // its own (the meta step): they must be averaged as the students' are.
  virtual void set_collective(Collective* collective) {}
};

class FixedWeighting final : public WeightingPolicy {
 public:
  FixedWeighting(std::string name, double alpha, double beta);
  std::string name() const override { return name_; }
  bool needs_teacher() const override { return beta_ != 0.0; }
  std::pair<Tensor, Tensor> weights(const WeightInputs& in) override;

 private:
  std::string name_;
  double alpha_, beta_;
};

std::unique_ptr<WeightingPolicy> ce_weighting();
std::unique_ptr<WeightingPolicy> kd_weighting(double kd_alpha);

// DGKD (Son et al., ICCV 2021): the student learns from every guide at once,
//   L = (1 - a) CE + a tau^2 sum_{kept guides j} KL(qT_j || q),
// and each iteration `drop` of the guides, drawn at random, sit out (never all of them): the
// paper's stochastic variant, a dropout over teachers. The draw is a pure function of (seed,
// iteration), so a resumed stage drops the same guides as an uninterrupted one.
class DgkdWeighting final : public WeightingPolicy {
 public:
  DgkdWeighting(double kd_alpha, std::int64_t drop, std::uint64_t seed);
  std::string name() const override { return "dgkd"; }
  bool needs_teacher() const override { return true; }
  bool steps_replayable() const override { return drop_ == 0; }  // else the guides change
  std::vector<std::size_t> select_guides(std::int64_t iteration, std::size_t available) override;
  // beta = a times the number of guides averaged into the targets (the sum above).
  std::pair<Tensor, Tensor> weights(const WeightInputs& in) override;

 private:
  double a_;
  std::int64_t drop_;
  std::uint64_t seed_;
};

class CNetWeighting final : public WeightingPolicy {
 public:
  // Meta batches come from `val_loader` (the held-out split, never augmented), cycling
  // through its epochs; `batchnorm_train` keeps the C-Net's BatchNorm in training mode for
  // the weights of the normal step too (the released code's behaviour).
  CNetWeighting(std::shared_ptr<nn::CNet> cnet, optim::AdamOptions adam, std::int64_t meta_interval,
                data::BatchIterator val_loader, bool batchnorm_train);
  std::string name() const override { return "mcdistil"; }
  bool needs_teacher() const override { return true; }
  bool acts_before_step(std::int64_t iteration) const override {
    return iteration % meta_interval_ == 0;
  }
  std::vector<nn::Module*> modules() override { return {cnet_.get()}; }
  bool weights_need_student_logits() const override {
    return cnet_->config().input == nn::CNetInput::ImageStudents;
  }
  // Draws the next meta batch from the held-out split.
  std::vector<double> prepare_before_step(std::int64_t iteration) override;
  // The meta-gradient; returns dM/dphi per C-Net parameter, then the (K) meta losses.
  std::vector<Tensor> before_step_on_device(std::vector<Student>& students,
                                            const LabelledBatch& batch,
                                            const TeacherTargets& teacher,
                                            const std::vector<StreamRef>& student_lanes) override;
  // The C-Net's Adam step on that gradient.
  void finish_before_step(const std::vector<Tensor>& outputs) override;
  bool before_step_replayable() const override { return true; }
  std::pair<Tensor, Tensor> weights(const WeightInputs& in) override;
  // With replicas, the meta step averages the lookahead gradients, the meta gradients at theta',
  // the C-Net's gradient and the meta losses over them (meta_step.h).
  void set_collective(Collective* collective) override { collective_ = collective; }
  // Data parallelism: every replica draws the same meta batch and keeps rows [rank * n / replicas,
  // (rank + 1) * n / replicas) of it, n its rows rounded down to a multiple of `replicas` (so
  // that every replica's share has the same shape; a batch with fewer rows than replicas, the
  // split's last, is passed over). Default: the whole batch (0, 1).
  void set_meta_share(int rank, int replicas);
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state, const std::string& source) override;

  nn::CNet& cnet() { return *cnet_; }
  std::int64_t meta_steps() const { return meta_steps_; }
  // The meta batch drawn last (undefined before the first), on the C-Net's device.
  const LabelledBatch& meta_batch() const { return meta_batch_; }
  // M = sum_k M_k of the last meta step (0 before the first). Read on request: the meta step
  // itself leaves it on the device, so it does not wait for the device to finish.
  double last_meta_loss() const;

 private:
  std::shared_ptr<nn::CNet> cnet_;
  optim::Adam adam_;
  std::int64_t meta_interval_;
  data::BatchIterator val_loader_;
  bool batchnorm_train_;
  std::int64_t meta_steps_ = 0;
  LabelledBatch meta_batch_;                     // the last drawn, on the C-Net's device
  std::map<Shape, LabelledBatch> meta_batches_;  // per shape: refilled in place
  Tensor last_meta_losses_;  // (K) M_k of the last meta step, on the C-Net's device
  Collective* collective_ = nullptr;
  int share_rank_ = 0, shares_ = 1;
};

// The per-step loop body shared by every method and stage.
class Trainer {
 public:
  // Teachers are used in eval mode, never updated; there may be none when the policy needs
  // none. With several, the policy picks each iteration's guides and their softmaxes are
  // mixed (make_mixture_targets).
  Trainer(std::vector<Student>& students, std::vector<std::shared_ptr<nn::Module>> teachers,
          std::unique_ptr<WeightingPolicy> policy, double tau);
  // One teacher, or none when `teacher` is null.
  Trainer(std::vector<Student>& students, std::shared_ptr<nn::Module> teacher,
          std::unique_ptr<WeightingPolicy> policy, double tau);

  // One iteration on `batch`: teacher logits once, the policy's meta step if due, every
  // student's forward, the fused loss, backward and SGD step per student (the fused loss for
  // all students in one launch when the weights read every student's logits, one per student
  // otherwise).
  // On a device with streams the teachers and each student run on lanes of their own
  // (student_streams.h), joined back to the caller's stream before step returns.
  void step(const data::Batch& batch);

  // Students on streams of their own (the default) or all work on the caller's stream. The
  // results are the same either way; only the overlap on a GPU differs.
  void set_concurrent_students(bool on) { concurrent_ = on; }
  bool concurrent_students() const { return concurrent_; }
  // With concurrent students: 0 (the default) gives every student a stream of its own, and the
  // teachers and the weights one each (so does n >= K); 1 <= n < K puts the students on n
  // streams, balanced by parameter count, with the teachers and the weights on the least loaded
  // one. Students that share a stream run one after another and reuse each other's memory (a
  // device's caching allocator keeps memory per stream): less memory, less overlap.
  void set_shared_student_streams(std::size_t n) { shared_lanes_ = n; }
  std::size_t shared_student_streams() const { return shared_lanes_; }
  // On a device with graphs (CUDA), steps that repeat the same work are captured once as a
  // graph and replayed with one launch (the default), and so is the policy's work before the
  // step (the meta step), as a second graph. Work with a new batch shape or new learning rates
  // runs eagerly, is captured at its next occurrence and replayed from then on. Same results
  // either way. When a capture fails the trainer says so on stderr and runs that work eagerly
  // (and everything on one stream) from then on.
  void set_graphs(bool on) { graphs_ = on; }
  // Drops the captured graphs (their memory goes back). A graph reads and writes the tensors it
  // was captured with: after loading state that replaces models' or optimizers' tensors (not
  // copying into them), call this before the next step.
  void reset_graphs();
  bool graphs() const { return graphs_; }
  // Steps, and meta steps, run by replaying a graph so far; graphs captured.
  std::int64_t replayed_steps() const { return replayed_; }
  std::int64_t replayed_meta_steps() const { return meta_replayed_; }
  std::int64_t captured_graphs() const { return captures_; }

  // Deferred meters (off by default): a step's meters are added to the students' Meters in
  // the next step, after that step's work was queued, so that on a GPU the host never waits
  // for a step to end before it queues the next one. The students' meters then lack the last
  // step until flush_meters(): call it before reading them for a report or a checkpoint, and
  // before the trainer ends (which does not add them: the students may be gone by then). With
  // them off, the meters are complete when step() returns (the host waits for the step).
  void set_deferred_meters(bool on) {
    if (!on) flush_meters();
    deferred_meters_ = on;
  }
  bool deferred_meters() const { return deferred_meters_; }
  // Adds the meters still on their way (nothing without deferred meters).
  void flush_meters();

  // Data parallelism (engine/collective.h): this trainer is replica `collective->rank()` of
  // `collective->size()`, each given its own shard of every batch (the same number of samples
  // each: drop an uneven last batch, or the replicas' graphs and reductions no longer match) and
  // holding the same models. After every student's backward their gradients are averaged over
  // the replicas together, then each takes its SGD step; the meta step averages what it
  // differentiates; the students' and the policy's floating buffers (BatchNorm's running
  // statistics) are averaged after every step. So the replicas stay identical and train as one
  // model on the union of their shards, with BatchNorm's batch statistics per shard. Meters count
  // the replica's own shard. A replica whose step fails aborts the collective, so the others
  // fail rather than wait; with several replicas a failed graph capture is such a failure (they
  // must capture and replay alike). Graphs are captured only when the reductions may be
  // (Collective::capturable). The collective must outlive the steps and the graphs that hold
  // its reductions (reset_graphs, or the trainer's end). nullptr (the default): alone.
  void set_collective(Collective* collective);
  Collective* collective() const { return collective_; }

  std::int64_t iteration() const { return iteration_; }
  void set_iteration(std::int64_t it) { iteration_ = it; }
  WeightingPolicy& policy() { return *policy_; }
  std::vector<Student>& students() { return students_; }

 private:
  // What a step leaves on the device for the meters: every student's loss and per-sample ce,
  // kl, alpha and beta in one tensor, and the predicted classes (K * B).
  struct StepRecord {
    Tensor values, predictions;
  };
  // A step's meters on their way to the host (HostCopy: the device's outputs, the labels).
  struct PendingMeters {
    HostCopy values, predictions, labels;
  };
  // A step's device work: the graph key says when two steps queue the same work.
  struct GraphKey {
    std::vector<double> values;  // batch shape, learning rates, lanes on or off
    bool operator==(const GraphKey&) const = default;
  };
  // The host-side integer buffers a step changes (BatchNorm's batch counters): a replay runs
  // no host code, so the trainer adds what the captured step added.
  struct HostCounter {
    Tensor buffer;
    std::vector<std::int64_t> before, step;
  };
  // A captured piece of an iteration (the step, or the policy's work before it).
  struct GraphSlot {
    std::unique_ptr<DeviceGraph> graph;
    GraphKey key, seen;    // the captured work's key; the last key seen (captured on repeat)
    LabelledBatch inputs;  // refilled in place before each replay
    std::vector<HostCounter> counters;
    bool failed = false;
  };

  // Queues the iteration's device work (the policy's work before the step, then the step).
  StepRecord queue_step(const data::Batch& batch, Device device);
  TeacherTargets teacher_targets(const Tensor& images);
  StudentStreams& streams_for(Device device);
  std::vector<StreamRef> student_lanes(const StudentStreams& lanes) const;
  // The step; `teacher`, when given, holds the teachers' targets for the batch already made.
  StepRecord device_step(const LabelledBatch& batch, StudentStreams& lanes,
                         const TeacherTargets* teacher);
  // The step when the weights need no student logits: every student's whole step on its lane.
  StepRecord students_independently(const LabelledBatch& batch, StudentStreams& lanes,
                                    const TeacherTargets& teacher);
  // The policy's device work before the step, after the teachers' targets (left in `teacher`).
  std::vector<Tensor> before_step_on_device(const LabelledBatch& batch, StudentStreams& lanes,
                                            TeacherTargets& teacher);
  bool step_by_graph(const data::Batch& batch, StudentStreams& lanes, StepRecord& record);
  bool before_step_by_graph(const data::Batch& batch, StudentStreams& lanes,
                            const std::vector<double>& policy_key);
  // Replays `slot` for `key` on the batch, capturing `record` first when the key repeats the
  // last one seen; false when the work must run eagerly instead. `drop_outputs` lets go of the
  // tensors a previous capture of the slot left.
  bool replay_or_capture(GraphSlot& slot, const GraphKey& key, const data::Batch& batch,
                         StudentStreams& lanes,
                         const std::function<void(const LabelledBatch&)>& record,
                         const std::function<void()>& drop_outputs);
  GraphKey graph_key(const data::Batch& batch) const;
  // With replicas: after every student's backward, their gradients averaged together and each
  // student's SGD step on its lane (in the lanes' queue order); at the end of a step, every
  // floating buffer of the students and of the policy's models averaged.
  void step_averaged(const StudentStreams& lanes);
  void average_buffers();
  std::vector<HostCounter> host_counters();
  void accumulate_meters(PendingMeters& step);  // waits for the copies if need be

  std::vector<Student>& students_;
  std::vector<std::shared_ptr<nn::Module>> teachers_;
  std::unique_ptr<WeightingPolicy> policy_;
  double tau_;
  std::int64_t iteration_ = 0;
  bool concurrent_ = true;
  std::size_t shared_lanes_ = 0;
  std::pair<bool, std::size_t> lanes_requested_{false, 0};  // when streams_ was made
  std::unique_ptr<StudentStreams> streams_;  // made on the first step, on the students' device
  bool graphs_ = true;
  GraphSlot step_graph_, before_step_graph_;
  StepRecord step_outputs_;                  // rewritten by each replay of step_graph_
  std::vector<Tensor> before_step_outputs_;  // rewritten by each replay of before_step_graph_
  std::int64_t replayed_ = 0, meta_replayed_ = 0, captures_ = 0;
  bool deferred_meters_ = false;
  Collective* collective_ = nullptr;
  StreamRef last_main_;                          // the caller's stream in the last step
  std::optional<PendingMeters> pending_meters_;  // the last step's, with deferred meters
};

}  // namespace mcd::distill
