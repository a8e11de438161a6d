// A seeded random generator (xoshiro256**) whose whole state is four words, so a run can
// save it in a checkpoint and continue bit-identically.
#pragma once
#include <array>
#include <cstdint>

namespace mcd {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) { seed_with(seed); }
  void seed_with(std::uint64_t seed);
  std::uint64_t next_u64();
  double uniform();                      // [0, 1)
  double normal();                       // standard normal (Box-Muller, no cached value)
  std::uint64_t below(std::uint64_t n);  // uniform integer in [0, n)
  std::array<std::uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<std::uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<std::uint64_t, 4> s_{};
};

}  // namespace mcd
