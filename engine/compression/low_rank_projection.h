// Moving a head's full-dimension tokens into rank buckets of its basis (kvstore/low_rank_segment.h),
// and the per-token reconstruction errors that dimension-level methods weigh ranks with.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kvstore/head_basis.h"
#include "kvstore/head_cache.h"

namespace kvshrink::engine {

// Rotates keys [n x d] (as the cache holds them, RoPE applied at `positions`) back to before RoPE,
// in place: `backend.rope` at the negated positions, the exact inverse with the same (2i, 2i+1)
// pair convention by construction.
void unrotate_keys(float* keys, const int32_t* positions, int64_t n, int64_t d, float rope_base,
                   kernels::Backend& backend);

// Keys of segment-contiguous rows [n x d] in the basis's key space: as stored (post-RoPE) or rotated
// back to before RoPE (`backend.rope` at the negated positions, the exact inverse rotation).
std::vector<float> keys_in_basis_space(const float* keys, const int32_t* positions, int64_t n,
                                       const kvstore::HeadBasis& basis, kernels::Backend& backend);

// Z [n x r] = X [n x head_dim] . U[:r]^T: coefficients of rows in the first r basis vectors
// (backend.matmul_f32).
std::vector<float> project_rows(const float* rows, int64_t n, std::span<const float> basis, int64_t head_dim,
                                int64_t r, kernels::Backend& backend);

// errors[t * ranks.size() + i] = ||x - P_r x||^2 / ||x||^2 of row t of X [n x d] at r = ranks[i]
// (each in [0, d]) in `basis` (d orthonormal vectors of d floats), from the tail sum over k >= r
// of the squared coefficients c = U x, free of the cancellation in ||x||^2 - ||c_r||^2; 0 for a
// zero row.
std::vector<float> relative_errors(const float* rows, int64_t n, int64_t d, std::span<const float> basis,
                                   std::span<const int32_t> ranks, kernels::Backend& backend);
// The same for rows in host memory, on a CPU backend of its own (calibration samples).
std::vector<float> relative_errors(const float* rows, int64_t n, int64_t d, std::span<const float> basis,
                                   std::span<const int32_t> ranks);

// errors[t * ranks.size() + i] for full-dimension token t of `head` and rank ranks[i]:
// ||k - P_r k||^2 / ||k||^2 + ||v - P_r v||^2 / ||v||^2 (0 at r >= latent_dim, 2 at r = 0).
// Ranks must be in [0, latent_dim]. Needs a per-head basis (latent_dim = head_dim).
std::vector<float> reconstruction_errors(const kvstore::HeadCache& head, const kvstore::HeadBasis& basis,
                                         std::span<const int32_t> ranks, kernels::Backend& backend);

// A copy of `head` that keeps its full-dimension token kept[i] at rank ranks[i] (kept ascending):
// ranks >= head_dim stay full-dimension tokens, ranks in [1, head_dim) go to one low-rank segment per
// rank; the low-rank segments `head` already holds come along. Throws std::invalid_argument for a
// rank below 1 or sizes that differ.
kvstore::HeadCache mixed_dimension_copy(const kvstore::HeadCache& head, std::span<const int32_t> kept,
                                        std::span<const int32_t> ranks,
                                        const std::shared_ptr<const kvstore::HeadBasis>& basis,
                                        kernels::Backend& backend);

// The joint basis of a layer (all kv heads concatenated, DynaKV): D = n_heads * head_dim, vector k
// of the keys at key[k * D, (k + 1) * D), and each head's view of it (latent_dim D, components cut
// to the head).
struct JointBasis {
  int64_t dim = 0;                                               // D
  std::vector<float> key;                                        // [D x D]
  std::vector<float> value;                                      // [D x D]
  std::vector<std::shared_ptr<const kvstore::HeadBasis>> heads;  // [n_heads]
};

// errors[t * ranks.size() + i] for the layer's token t (the same full-dimension tokens in every head)
// at joint rank ranks[i] in [0, D], relative over the concatenated keys plus the concatenated values.
std::vector<float> joint_reconstruction_errors(std::span<const kvstore::HeadCache* const> heads,
                                               const JointBasis& basis, std::span<const int32_t> ranks,
                                               kernels::Backend& backend);

// The layer's heads with token kept[i] at joint rank ranks[i] (the same plan for every head): ranks
// >= D stay full-dimension tokens in each head; lower ranks go to one block per rank that every
// head's segment shares (each counts 1/n_heads of it).
std::vector<kvstore::HeadCache> joint_dimension_copy(std::span<const kvstore::HeadCache* const> heads,
                                                     std::span<const int32_t> kept,
                                                     std::span<const int32_t> ranks, const JointBasis& basis,
                                                     kernels::Backend& backend);

}  // namespace kvshrink::engine
