// StudentStreams (student_streams.h).
#include <mcd/distill/student_streams.h>

namespace mcd::distill {

StudentStreams::StudentStreams(Device device, std::size_t students, bool concurrent)
    : device_(device), students_(students), main_(current_stream(device)) {
  if (!concurrent || device.is_cpu()) return;
  for (std::size_t i = 0; i < students + 2; ++i)
    lanes_.push_back(std::make_unique<PooledStream>(device));
  // A backend without streams lends handle 0 for every lane: that is one queue, no lanes.
  if (lanes_[0]->ref() == main_) lanes_.clear();
}

void StudentStreams::begin_step() {
  main_ = current_stream(device_);
}

void StudentStreams::fork_students() const {
  for (std::size_t k = 0; k < students_ && concurrent(); ++k)
    fork(student(k));
}

void StudentStreams::join_students() const {
  for (std::size_t k = 0; k < students_ && concurrent(); ++k)
    join(student(k));
}

void StudentStreams::join_all() const {
  for (const auto& lane : lanes_)
    join(lane->ref());
}

}  // namespace mcd::distill
