// Derives independent generator seeds from (seed, epoch, position, stream): every random
// choice of the data pipeline is a pure function of these, so runs resume and parallelise
// without changing results.
#pragma once
#include <cstdint>

namespace mcd::data::detail {

// Streams keep the shuffle and the augmentation of the same (seed, epoch) independent.
enum class SeedStream : std::uint64_t { Shuffle = 0x5348554646ULL, Augment = 0x4155474dULL };

inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline std::uint64_t derive_seed(std::uint64_t seed, SeedStream stream, std::int64_t epoch,
                                 std::int64_t position = 0) {
  std::uint64_t h = mix64(seed ^ static_cast<std::uint64_t>(stream));
  h = mix64(h ^ static_cast<std::uint64_t>(epoch));
  return mix64(h ^ static_cast<std::uint64_t>(position));
}

}  // namespace mcd::data::detail
