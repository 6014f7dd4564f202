// Reproducible normally distributed test data (mt19937, so the same on every machine's libstdc++).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace kvshrink::testing {

inline std::vector<float> normal_values(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

}  // namespace kvshrink::testing
