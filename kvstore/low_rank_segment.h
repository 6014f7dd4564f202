// Tokens of one (sequence, layer, kv head) kept at `rank` coefficients in a HeadBasis: a token with
// key k (post- or pre-RoPE, as the basis says) and value v holds z_k = U_k[:rank] k and
// z_v = U_v[:rank] v (rows of U are the basis vectors). Attention over it projects the query into
// the basis once per step (kernels::LowRankAttention).
//
// The coefficients live in an immutable LowRankBlock. With a joint basis the block describes all
// kv heads of a layer and every head's segment shares it (`sharers` heads; each counts its share).
//
// Layout: key_coefficients, value_coefficients [tokens x rank] float32 row-major; positions [tokens],
// ascending.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kvstore/head_basis.h"

namespace kvshrink::kvstore {

struct LowRankBlock {
  int64_t rank = 0;
  int64_t sharers = 1;  // heads whose segments point at this block
  std::vector<float> key_coefficients;
  std::vector<float> value_coefficients;
  std::vector<int32_t> positions;

  int64_t tokens() const { return static_cast<int64_t>(positions.size()); }
  // Coefficients of K and V plus positions.
  uint64_t bytes() const {
    return (key_coefficients.size() + value_coefficients.size()) * sizeof(float) +
           positions.size() * sizeof(int32_t);
  }
};

struct LowRankSegment {
  std::shared_ptr<const HeadBasis> basis;
  std::shared_ptr<const LowRankBlock> block;

  int64_t tokens() const { return block->tokens(); }
  int64_t rank() const { return block->rank; }
  // This head's share of the block's bytes.
  uint64_t bytes_held() const { return block->bytes() / static_cast<uint64_t>(block->sharers); }
};

}  // namespace kvshrink::kvstore
