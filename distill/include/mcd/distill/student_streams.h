// The multi-student scheduler's streams: one for the teachers, one per student and one for the
// weighting policy, so that the students' forwards and backwards, whose small kernels each
// leave most of a GPU idle, run side by side (and beside the teachers and the C-Net). A step forks
// work from the caller's stream ("main") onto these lanes and joins it back (Trainer::step says
// where); on the CPU, or with concurrency off, every lane is the main stream and forks and joins do
// nothing, so results never depend on the setting. Every lane's work in a step starts with a fork
// from main, and the step ends with every lane joined: so a tensor made on one lane, read on
// another and freed after the joins is never reused by its lane before the reader is done.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include <mcd/engine/stream.h>

namespace mcd::distill {

// Which of `lanes` lanes each of the students runs on: the largest cost first, each to the
// least loaded lane (ties: the lower lane), so that the lanes finish at about the same time.
std::vector<std::size_t> balance_lanes(const std::vector<double>& costs, std::size_t lanes);

class StudentStreams {
 public:
  // Lanes on `device` for `students` students; none when `concurrent` is false or the device
  // has no streams. `shared_lanes` = 0 gives every student a lane of its own, and the teachers
  // and the policy one each. 1 <= shared_lanes < students puts the students on that many lanes
  // (balance_lanes over `costs`, one per student), and the teachers and the policy on the least
  // loaded one: students sharing a lane run one after another and reuse each other's memory
  // (a device's caching allocator keeps memory per stream).
  StudentStreams(Device device, std::size_t students, bool concurrent, std::size_t shared_lanes = 0,
                 const std::vector<double>& costs = {});

  // Takes the calling thread's current stream on the device as this step's main stream.
  void begin_step();

  Device device() const { return device_; }
  bool concurrent() const { return !lanes_.empty(); }
  StreamRef main() const { return main_; }
  StreamRef teacher() const { return lane(teacher_lane_); }
  StreamRef student(std::size_t k) const { return lane(student_lane_.at(k)); }
  StreamRef policy() const { return lane(policy_lane_); }
  // `lane` runs what is queued on it from now on after what main has queued so far.
  void fork(StreamRef lane) const { stream_wait(lane, main_); }
  // Main runs what is queued on it from now on after what `lane` has queued so far.
  void join(StreamRef lane) const { stream_wait(main_, lane); }
  // The students in the order to queue their work: those on the teachers' or the policy's lane
  // last (a wait on a lane covers everything queued there so far, so the other lanes then wait
  // for the targets and the weights only), otherwise by index.
  std::vector<std::size_t> queue_order() const;
  // Every lane a student runs on, once each.
  void fork_students() const;
  void join_students() const;
  // Joins every lane (after a failure part-way through a step, so that none is left forked).
  void join_all() const;

 private:
  StreamRef lane(std::size_t i) const { return lanes_.empty() ? main_ : lanes_[i]->ref(); }

  Device device_;
  std::vector<std::unique_ptr<PooledStream>> lanes_;
  std::vector<std::size_t> student_lane_;       // index into lanes_ per student
  std::vector<std::size_t> distinct_students_;  // the students' lanes, once each
  std::size_t teacher_lane_ = 0, policy_lane_ = 0;
  StreamRef main_;
};

}  // namespace mcd::distill
