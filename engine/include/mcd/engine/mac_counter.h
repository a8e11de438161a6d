// MacCounter: counts the multiply-accumulates of the conv2d and matmul ops (linear included)
// run on this thread while it is alive. Counting is off, and costs one thread-local read
// per op, when no counter exists; nested counters each see the work done in their scope.
#pragma once
#include <cstdint>

namespace mcd {

// Counts every conv2d / matmul call, including those that backward rules make: measure a
// forward under NoGradGuard to get the MACs of one forward pass.
class MacCounter {
 public:
  MacCounter();
  ~MacCounter();
  MacCounter(const MacCounter&) = delete;
  MacCounter& operator=(const MacCounter&) = delete;

  std::int64_t macs() const { return macs_; }

 private:
  friend void add_macs(std::int64_t macs);
  MacCounter* outer_;
  std::int64_t macs_ = 0;
};

// Called by the ops with the MACs they are about to run; a no-op without a live counter.
void add_macs(std::int64_t macs);

}  // namespace mcd
