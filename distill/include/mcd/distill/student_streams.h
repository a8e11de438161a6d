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

class StudentStreams {
 public:
  // Lanes on `device` for `students` students; none when `concurrent` is false or the device
  // has no streams.
  StudentStreams(Device device, std::size_t students, bool concurrent);

  // Takes the calling thread's current stream on the device as this step's main stream.
  void begin_step();

  Device device() const { return device_; }
  bool concurrent() const { return !lanes_.empty(); }
  StreamRef main() const { return main_; }
  StreamRef teacher() const { return lanes_.empty() ? main_ : lanes_[0]->ref(); }
  StreamRef student(std::size_t k) const {
    return lanes_.empty() ? main_ : lanes_.at(k + 1)->ref();
  }
  StreamRef policy() const { return lanes_.empty() ? main_ : lanes_.back()->ref(); }
  // `lane` runs what is queued on it from now on after what main has queued so far.
  void fork(StreamRef lane) const { stream_wait(lane, main_); }
  // Main runs what is queued on it from now on after what `lane` has queued so far.
  void join(StreamRef lane) const { stream_wait(main_, lane); }
  void fork_students() const;
  void join_students() const;
  // Joins every lane (after a failure part-way through a step, so that none is left forked).
  void join_all() const;

 private:
  Device device_;
  std::size_t students_;
  // The teachers', one per student, the policy's.
  std::vector<std::unique_ptr<PooledStream>> lanes_;
  StreamRef main_;
};

}  // namespace mcd::distill
