#include "kernels/cpu/window_attention.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/vector_math.h"

namespace kvshrink::kernels::cpu {

void window_attention_mean(const float* q, int64_t q_stride, const int32_t* q_positions, int64_t window,
                           int64_t group, int64_t head_dim, float scale, std::span<const KeyBlock> blocks,
                           float* out) {
  int64_t n = 0;
  for (const auto& block : blocks) n += block.n;
  std::fill_n(out, n, 0.0f);
  if (n == 0 || window == 0) return;
  // logits[(j*window + i) x n]: head j, window query i, every token
  std::vector<float> logits(static_cast<size_t>(group * window * n));
  std::vector<int32_t> positions;
  positions.reserve(static_cast<size_t>(n));
  int64_t column = 0;
  for (const auto& block : blocks) {
    positions.insert(positions.end(), block.positions, block.positions + block.n);
    if (block.n == 0) continue;
    for (int64_t j = 0; j < group; ++j) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(window),
                  static_cast<int>(block.n), static_cast<int>(head_dim), scale, q + j * head_dim,
                  static_cast<int>(q_stride), block.keys, static_cast<int>(head_dim), 0.0f,
                  logits.data() + j * window * n + column, static_cast<int>(n));
    }
    column += block.n;
  }
  const float weight = 1.0f / static_cast<float>(window * group);
  for (int64_t j = 0; j < group; ++j) {
    for (int64_t i = 0; i < window; ++i) {
      float* row = logits.data() + (j * window + i) * n;
      // visible tokens: positions ascend, so a prefix of the concatenation
      const int64_t seen =
          std::upper_bound(positions.begin(), positions.end(), q_positions[i]) - positions.begin();
      if (seen == 0) continue;
      const float sum = exp_shifted_sum(row, seen, max_of(row, seen));
      const float factor = weight / sum;
      for (int64_t t = 0; t < seen; ++t) out[t] += row[t] * factor;
    }
  }
}

}  // namespace kvshrink::kernels::cpu
