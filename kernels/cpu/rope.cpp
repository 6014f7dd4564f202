#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace kvshrink::kernels::cpu {

void rope(float* x, int64_t m, int64_t n_heads, int64_t head_dim, const int32_t* positions, float freq_base) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(half);  // freq_base^(-2i/head_dim)
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(freq_base), -2.0 * static_cast<double>(i) / head_dim);
  }
  std::vector<float> cos_theta(half), sin_theta(half);
  for (int64_t token = 0; token < m; ++token) {
    for (int64_t i = 0; i < half; ++i) {
      const double theta = positions[token] * inv_freq[i];
      cos_theta[i] = static_cast<float>(std::cos(theta));
      sin_theta[i] = static_cast<float>(std::sin(theta));
    }
    for (int64_t head = 0; head < n_heads; ++head) {
      float* v = x + (token * n_heads + head) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[2 * i];
        const float x1 = v[2 * i + 1];
        v[2 * i] = x0 * cos_theta[i] - x1 * sin_theta[i];
        v[2 * i + 1] = x0 * sin_theta[i] + x1 * cos_theta[i];
      }
    }
  }
}

}  // namespace kvshrink::kernels::cpu
