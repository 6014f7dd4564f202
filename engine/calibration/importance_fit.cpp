#include "engine/calibration/importance_fit.h"

#include <algorithm>
#include <cmath>

namespace kvshrink::engine {
namespace {

constexpr double kImportanceFloor = 1e-6;  // y = log(mass / seen + floor)
constexpr double kRidge = 1e-3;            // lambda = kRidge * trace(X^T X / n) / features

}  // namespace

int64_t importance_tokens(std::span<const int64_t> lengths) {
  int64_t tokens = 0;
  for (const int64_t length : lengths) {
    tokens += std::max<int64_t>(0, length - kImportanceSinkTokens - kImportanceRecentTokens);
  }
  return tokens;
}

void add_importance_rows(const HeadSamples& samples, int64_t d, int64_t begin, int64_t end,
                         std::vector<float>& rows) {
  for (int64_t t = 0; t < samples.n; ++t) {
    const int64_t position = samples.positions[static_cast<size_t>(t)];
    if (position - begin < kImportanceSinkTokens || end - position <= kImportanceRecentTokens) continue;
    const float* key = samples.rows[kKeyPreRope].data() + t * d;
    const float* value = samples.rows[kValueRows].data() + t * d;
    rows.insert(rows.end(), key, key + d);
    rows.insert(rows.end(), value, value + d);
    const double seen = static_cast<double>(end - position);
    rows.push_back(1.0f);
    rows.push_back(static_cast<float>(
        std::log(static_cast<double>(samples.mass[static_cast<size_t>(t)]) / seen + kImportanceFloor)));
  }
}

std::vector<float> fit_importance(const SecondMoment& moment) {
  const int64_t p = moment.dim() - 1;
  const auto m = moment.matrix();  // [(p + 1) x (p + 1)]
  std::vector<double> gram(static_cast<size_t>(p * p));
  std::vector<double> rhs(static_cast<size_t>(p));
  double trace = 0.0;
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j < p; ++j)
      gram[static_cast<size_t>(i * p + j)] = m[static_cast<size_t>(i * (p + 1) + j)];
    rhs[static_cast<size_t>(i)] = m[static_cast<size_t>(i * (p + 1) + p)];
    trace += gram[static_cast<size_t>(i * p + i)];
  }
  const auto w = ridge_solve(gram, rhs, p, kRidge * trace / static_cast<double>(p));
  return std::vector<float>(w.begin(), w.end());
}

}  // namespace kvshrink::engine
