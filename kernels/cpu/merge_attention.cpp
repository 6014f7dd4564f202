// CpuBackend::merge_attention (kernels/backend.h): the online-softmax merge of two token sets'
// attention for the same queries.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"

namespace kvshrink::kernels::cpu {

// For each query row i and head j: with a = lse, b = lse_b and m = max(a, b),
//   out = (e^(a-m) out + e^(b-m) out_b) / (e^(a-m) + e^(b-m)),  lse = m + log(e^(a-m) + e^(b-m)).
void CpuBackend::merge_attention(float* out, int64_t out_stride, float* lse, const float* out_b,
                                 int64_t out_b_stride, const float* lse_b, int64_t m, int64_t group,
                                 int64_t head_dim) {
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < group; ++j) {
      const float a = lse[i * group + j];
      const float b = lse_b[i * group + j];
      if (b == kNone) continue;
      float* o = out + i * out_stride + j * head_dim;
      const float* ob = out_b + i * out_b_stride + j * head_dim;
      if (a == kNone) {
        for (int64_t k = 0; k < head_dim; ++k) o[k] = ob[k];
        lse[i * group + j] = b;
        continue;
      }
      const float top = a > b ? a : b;
      const float wa = std::exp(a - top);
      const float wb = std::exp(b - top);
      const float inv = 1.0f / (wa + wb);
      for (int64_t k = 0; k < head_dim; ++k) o[k] = (wa * o[k] + wb * ob[k]) * inv;
      lse[i * group + j] = top + std::log(wa + wb);
    }
  }
}

}  // namespace kvshrink::kernels::cpu
