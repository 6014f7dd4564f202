// One kv head's orthonormal bases for tokens kept at reduced dimension (engine/compression/
// kv_basis_file.h, issue 5). Basis vector k of the keys is key[k * head_dim, (k + 1) * head_dim),
// k < latent_dim, energy-ordered, so a token truncated to rank r keeps its first r coefficients.
// latent_dim = head_dim for a per-head basis; for the joint basis of a layer (all kv heads
// concatenated, DynaKV) latent_dim = n_kv_heads * head_dim and each vector is cut to this head's
// components. Keys are post-RoPE (as the cache holds them) or pre-RoPE (RoPE applied after
// reconstruction, at the token's position).
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::kvstore {

struct HeadBasis {
  int64_t head_dim = 0;
  int64_t latent_dim = 0;
  bool pre_rope = false;
  float rope_base = 10000.0f;
  std::vector<float> key;    // [latent_dim x head_dim]
  std::vector<float> value;  // [latent_dim x head_dim]
};

}  // namespace kvshrink::kvstore
