// The fit of the query-agnostic token-importance predictor (engine::predict_importance, DynaKV;
// docs/calibration.md): per (layer, kv head), ridge regression of a token's log attention
// importance y on its features [pre-RoPE key (d), value (d), 1] (p = 2d + 1 features).
//
// y = log(mass / seen + 1e-6): mass is the attention the token received during the chunk's prefill
// (kvstore::KvStoreOptions::track_attention_mass), seen = end - position the queries that saw it.
// The tokens of a chunk it is fitted and measured on leave out the first kImportanceSinkTokens
// (attention sinks, always kept anyway) and the last kImportanceRecentTokens (seen by too few
// queries for a stable mean).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/calibration/head_samples.h"
#include "engine/compression/pca.h"

namespace kvshrink::engine {

inline constexpr int64_t kImportanceSinkTokens = 4;
inline constexpr int64_t kImportanceRecentTokens = 32;

// Tokens of chunks of these lengths that the predictor is fitted or measured on.
int64_t importance_tokens(std::span<const int64_t> lengths);

// Appends to rows one row [pre-RoPE key (d), value (d), 1, y] (2d + 2 floats) per fitted token of
// samples (mass tracked), a chunk prefilled at positions [begin, end).
void add_importance_rows(const HeadSamples& samples, int64_t d, int64_t begin, int64_t end,
                         std::vector<float>& rows);

// The weights w [p] from the second moment [(p + 1) x (p + 1)] of rows [features, y]
// (add_importance_rows): (X^T X / n + lambda I) w = X^T y / n, lambda = 1e-3 * trace(X^T X / n) / p
// (engine::ridge_solve).
std::vector<float> fit_importance(const SecondMoment& moment);

}  // namespace kvshrink::engine
