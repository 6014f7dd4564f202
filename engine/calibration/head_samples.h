// One (layer, kv head)'s cached tokens as the calibration's sample rows (docs/calibration.md): keys
// as the cache stores them (post-RoPE), the same keys rotated back to before RoPE, and values.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "engine/compression/kv_basis_file.h"
#include "kernels/backend.h"
#include "kvstore/head_cache.h"

namespace kvshrink::engine {

// Sample kinds, in the order of every per-kind array.
enum SampleKind : int { kKeyPostRope = 0, kKeyPreRope = 1, kValueRows = 2, kSampleKinds = 3 };
inline constexpr std::array<const char*, kSampleKinds> kSampleKindNames = {"K post-RoPE", "K pre-RoPE", "V"};

// The kind of the keys a basis in `space` is fitted on.
inline SampleKind key_sample_kind(KeySpace space) {
  return space == KeySpace::kPreRope ? kKeyPreRope : kKeyPostRope;
}

// rows[kind]: the head's n cached tokens as contiguous rows [n x head_dim], in cache order;
// positions [n]: each token's position; mass [n]: its accumulated attention mass when the store
// tracks it (kvstore::KvStoreOptions::track_attention_mass), else empty.
struct HeadSamples {
  int64_t n = 0;
  std::array<std::vector<float>, kSampleKinds> rows;
  std::vector<int32_t> positions;
  std::vector<float> mass;
};

// Fills `samples` (its buffers reused) from `head`'s full-dimension segments; the pre-RoPE keys
// are the stored ones rotated back at their positions (engine::unrotate_keys, `rope_base`).
void gather_head_samples(const kvstore::HeadCache& head, kernels::Backend& backend, float rope_base,
                         HeadSamples& samples);

}  // namespace kvshrink::engine
