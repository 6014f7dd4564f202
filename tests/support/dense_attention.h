// One dense attention call on the CPU backend for kernel tests: m query tokens of `group` heads
// (rows of group x head_dim floats) at positions last - m + 1 .. last over `views`.
#pragma once

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace kvshrink::testing {

struct DenseAttention {
  std::vector<float> out;  // [m x group x head_dim]
  std::vector<float> lse;  // [m x group]
};

// Tracks the attention mass (summed) when the views carry mass slots.
inline DenseAttention cpu_dense_attention(const std::vector<kernels::KvBlockView>& views,
                                          const std::vector<float>& q, int64_t m, int32_t last, int64_t group,
                                          int64_t head_dim) {
  std::vector<int32_t> q_positions(static_cast<size_t>(m));
  std::iota(q_positions.begin(), q_positions.end(), static_cast<int32_t>(last - m + 1));
  DenseAttention r{std::vector<float>(static_cast<size_t>(m * group * head_dim)),
                   std::vector<float>(static_cast<size_t>(m * group))};
  kernels::HeadAttention a{};
  a.q = q.data();
  a.q_stride = group * head_dim;
  a.out = r.out.data();
  a.out_stride = group * head_dim;
  a.blocks = views.data();
  a.n_blocks = static_cast<int64_t>(views.size());
  a.q_positions = q_positions.data();
  a.m = m;
  a.group = group;
  a.head_dim = head_dim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  a.lse = r.lse.data();
  a.track_mass = !views.empty() && views[0].mass != nullptr;
  kernels::cpu::CpuBackend backend;
  backend.attention(a);
  return r;
}

}  // namespace kvshrink::testing
