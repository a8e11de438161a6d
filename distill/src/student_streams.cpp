// StudentStreams (student_streams.h).
#include <mcd/distill/student_streams.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include <mcd/engine/error.h>

namespace mcd::distill {

std::vector<std::size_t> balance_lanes(const std::vector<double>& costs, std::size_t lanes) {
  MCD_CHECK(lanes >= 1, "balance_lanes: no lanes for {} students", costs.size());
  for (double c : costs)
    MCD_CHECK(std::isfinite(c) && c >= 0, "balance_lanes: a cost of {} (expected finite, >= 0)", c);
  std::vector<std::size_t> order(costs.size());
  for (std::size_t k = 0; k < order.size(); ++k)
    order[k] = k;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  // The least loaded lane; among equal loads the one with fewest students, then the lowest.
  std::vector<std::pair<double, std::size_t>> load(lanes, {0.0, 0});
  std::vector<std::size_t> lane_of(costs.size(), 0);
  for (std::size_t k : order) {
    const auto least =
        static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    lane_of[k] = least;
    load[least].first += costs[k];
    load[least].second += 1;
  }
  return lane_of;
}

StudentStreams::StudentStreams(Device device, std::size_t students, bool concurrent,
                               std::size_t shared_lanes, const std::vector<double>& costs)
    : device_(device), student_lane_(students, 0), main_(current_stream(device)) {
  if (!concurrent || device.is_cpu()) return;
  const bool shared = shared_lanes >= 1 && shared_lanes < students;
  MCD_CHECK(!shared || costs.size() == students,
            "StudentStreams: {} costs for {} students sharing {} lanes", costs.size(), students,
            shared_lanes);
  const std::size_t count = shared ? shared_lanes : students + 2;
  for (std::size_t i = 0; i < count; ++i)
    lanes_.push_back(std::make_unique<PooledStream>(device));
  // A backend without streams lends handle 0 for every lane: that is one queue, no lanes.
  if (lanes_[0]->ref() == main_) {
    lanes_.clear();
    return;
  }
  if (shared) {
    student_lane_ = balance_lanes(costs, shared_lanes);
    std::vector<double> load(shared_lanes, 0.0);
    for (std::size_t k = 0; k < students; ++k)
      load[student_lane_[k]] += costs[k];
    teacher_lane_ = policy_lane_ =
        static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
  } else {
    // The teachers', one per student, the policy's.
    for (std::size_t k = 0; k < students; ++k)
      student_lane_[k] = k + 1;
    teacher_lane_ = 0;
    policy_lane_ = students + 1;
  }
  for (std::size_t l : student_lane_)
    if (std::find(distinct_students_.begin(), distinct_students_.end(), l) ==
        distinct_students_.end())
      distinct_students_.push_back(l);
}

std::vector<std::size_t> StudentStreams::queue_order() const {
  std::vector<std::size_t> order, shared_last;
  for (std::size_t k = 0; k < student_lane_.size(); ++k) {
    const bool shares =
        concurrent() && (student_lane_[k] == teacher_lane_ || student_lane_[k] == policy_lane_);
    (shares ? shared_last : order).push_back(k);
  }
  order.insert(order.end(), shared_last.begin(), shared_last.end());
  return order;
}

void StudentStreams::begin_step() {
  main_ = current_stream(device_);
}

void StudentStreams::fork_students() const {
  for (std::size_t l : distinct_students_)
    fork(lanes_[l]->ref());
}

void StudentStreams::join_students() const {
  for (std::size_t l : distinct_students_)
    join(lanes_[l]->ref());
}

void StudentStreams::join_all() const {
  for (const auto& lane : lanes_)
    join(lane->ref());
}

}  // namespace mcd::distill
