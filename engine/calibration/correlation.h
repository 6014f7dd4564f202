// Correlations of paired samples, for how well a predictor ranks (the importance predictor's
// held-out report, docs/calibration.md).
#pragma once

#include <span>

namespace kvshrink::engine {

// Pearson correlation of a and b (same length); NaN when fewer than 2 pairs or either does not vary.
double pearson_correlation(std::span<const double> a, std::span<const double> b);

// Spearman's rank correlation: the Pearson correlation of the ranks 0..n-1 of a and of b (ties
// share their mean rank); NaN as pearson_correlation.
double spearman_correlation(std::span<const double> a, std::span<const double> b);

}  // namespace kvshrink::engine
