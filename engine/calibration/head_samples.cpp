#include "engine/calibration/head_samples.h"

#include "engine/compression/low_rank_projection.h"

namespace kvshrink::engine {

void gather_head_samples(const kvstore::HeadCache& head, kernels::Backend& backend, float rope_base,
                         HeadSamples& samples) {
  const int64_t d = head.head_dim();
  samples.n = head.tokens();
  for (auto& rows : samples.rows) rows.clear();
  samples.positions.clear();
  samples.mass.clear();
  auto& post_rope = samples.rows[kKeyPostRope];
  auto& values = samples.rows[kValueRows];
  for (const auto& segment : head.segments()) {
    const auto keys = segment.keys();
    const auto segment_values = segment.values();
    const auto positions = segment.positions();
    post_rope.insert(post_rope.end(), keys.begin(), keys.end());
    values.insert(values.end(), segment_values.begin(), segment_values.end());
    samples.positions.insert(samples.positions.end(), positions.begin(), positions.end());
    if (segment.tracks_mass()) {
      for (int64_t i = 0; i < segment.tokens(); ++i) samples.mass.push_back(segment.mass(i));
    }
  }
  samples.rows[kKeyPreRope] = post_rope;
  unrotate_keys(samples.rows[kKeyPreRope].data(), samples.positions.data(), samples.n, d, rope_base, backend);
}

}  // namespace kvshrink::engine
