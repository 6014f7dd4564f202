// Tokens of one (sequence, layer, kv head) kept at `rank` coefficients in a HeadBasis: a token with
// key k (post- or pre-RoPE, as the basis says) and value v holds z_k = U_k[:rank] k and
// z_v = U_v[:rank] v (rows of U are the basis vectors). Attention over it projects the query into
// the basis once per step (kernels::LowRankAttention).
//
// The coefficients live in an immutable LowRankBlock. With a joint basis the block describes all
// kv heads of a layer and every head's segment shares it (`sharers` heads; each counts its share).
//
// Storage: blocks of the rank's KV pool (same block size as full-dimension segments), each
// holding T = tokens_per_block(rank) tokens laid out as
//   key coefficients [T x rank] e | value coefficients [T x rank] e | positions [T] i32,
// e the store's element type (f16 by default, or f32; coefficients are rounded to it).
// Positions ascend across the block's tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kvstore/head_basis.h"
#include "kvstore/kv_memory_pool.h"

namespace kvshrink::kvstore {

class LowRankBlock {
 public:
  // Copies n tokens: coefficients [n x rank] each (rounded to dtype), positions [n]. Throws
  // KvMemoryExhausted.
  LowRankBlock(int64_t rank, int64_t sharers, kernels::KvDtype dtype, const float* key_coefficients,
               const float* value_coefficients, const int32_t* positions, int64_t n, KvMemoryPool& pool);

  int64_t rank() const { return rank_; }
  kernels::KvDtype dtype() const { return dtype_; }
  int64_t sharers() const { return sharers_; }  // heads whose segments point at this block
  int64_t tokens() const { return tokens_; }
  int64_t tokens_per_block() const { return per_block_; }
  // Coefficients of K and V plus positions of the tokens held.
  uint64_t bytes() const { return static_cast<uint64_t>(tokens_) * bytes_per_token(rank_, dtype_); }
  static uint64_t bytes_per_token(int64_t rank, kernels::KvDtype dtype) {
    return 2 * rank * kernels::kv_dtype_bytes(dtype) + sizeof(int32_t);
  }
  uint64_t block_bytes_held() const { return blocks_.size() * block_bytes_; }
  std::vector<int32_t> positions() const;
  // Appends one bucket per pool block, in token order.
  void buckets(std::vector<kernels::LowRankBucket>& out) const;

 private:
  int64_t coefficient_bytes() const { return per_block_ * rank_ * kernels::kv_dtype_bytes(dtype_); }
  const std::byte* keys_of(size_t block) const { return blocks_[block].data(); }
  const std::byte* values_of(size_t block) const { return keys_of(block) + coefficient_bytes(); }
  const int32_t* positions_of(size_t block) const {
    return reinterpret_cast<const int32_t*>(values_of(block) + coefficient_bytes());
  }

  int64_t rank_;
  kernels::KvDtype dtype_;
  int64_t sharers_;
  int64_t tokens_;
  int64_t per_block_;
  uint64_t block_bytes_;
  std::vector<KvBlock> blocks_;
};

struct LowRankSegment {
  std::shared_ptr<const HeadBasis> basis;
  std::shared_ptr<const LowRankBlock> block;

  int64_t tokens() const { return block->tokens(); }
  int64_t rank() const { return block->rank(); }
  // This head's share of the block's bytes.
  uint64_t bytes_held() const { return block->bytes() / static_cast<uint64_t>(block->sharers()); }
};

}  // namespace kvshrink::kvstore
