// A run of one (sequence, layer, kv-head)'s tokens kept at full dimension, in fixed-size blocks
// from the rank's KV pool. Each token keeps its original position; keys are stored with RoPE
// applied. Appending allocates a block when the last one is full; destroying or clearing the
// segment gives its blocks back to the pool at once.
//
// Block layout (kBlockTokens tokens, head_dim d, element e = f16 by default or f32 bytes),
// block_bytes(d, dtype) bytes:
//   keys [kBlockTokens x d] e | values [kBlockTokens x d] e | positions [kBlockTokens] i32 |
//   attention mass [kBlockTokens] f32 (H2O's accumulated attention; read only when tracked)
// Appended K/V are rounded to the element type (f16: nearest even). Positions ascend across the
// segment's tokens.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kvstore/kv_memory_pool.h"

namespace kvshrink::kvstore {

class HeadSegment {
 public:
  static constexpr int64_t kBlockTokens = 16;
  static uint64_t block_bytes(int64_t head_dim, kernels::KvDtype dtype) {
    return kBlockTokens * (2 * head_dim * kernels::kv_dtype_bytes(dtype) + 8);
  }
  // Bytes a full-dimension token costs (K, V, position).
  static uint64_t bytes_per_token(int64_t head_dim, kernels::KvDtype dtype) {
    return 2 * head_dim * kernels::kv_dtype_bytes(dtype) + sizeof(int32_t);
  }

  HeadSegment(int64_t head_dim, kernels::KvDtype dtype, bool track_mass, KvMemoryPool& pool);
  HeadSegment(HeadSegment&&) = default;
  HeadSegment& operator=(HeadSegment&&) = default;

  // Throws KvMemoryExhausted when a new block is needed and the pool has none.
  void append(const float* key, const float* value, int32_t position);
  // Copies token `index` of `from` (same head_dim; its elements as they are when the dtypes match)
  // to the end of this segment, with its mass.
  void append_from(const HeadSegment& from, int64_t index);
  void clear();
  // In place: keeps only the tokens at `indices` (ascending, < tokens()) and gives the blocks no
  // longer needed back to the pool; allocates nothing.
  void retain(std::span<const int64_t> indices);

  int64_t head_dim() const { return head_dim_; }
  kernels::KvDtype dtype() const { return dtype_; }
  int64_t tokens() const { return tokens_; }
  bool tracks_mass() const { return track_mass_; }
  // out[head_dim] = token i's key / value as f32.
  void read_key(int64_t i, float* out) const;
  void read_value(int64_t i, float* out) const;
  int32_t position(int64_t i) const { return positions_of(i / kBlockTokens)[i % kBlockTokens]; }
  float& mass(int64_t i) const { return mass_of(i / kBlockTokens)[i % kBlockTokens]; }
  // Copies as f32: keys and values [tokens x head_dim], positions [tokens].
  std::vector<float> keys() const;
  std::vector<float> values() const;
  std::vector<int32_t> positions() const;
  // Appends one view per block, in token order (mass null unless tracked).
  void block_views(std::vector<kernels::KvBlockView>& out) const;

  // Bytes of K, V and positions for the tokens held (what compression figures count).
  uint64_t bytes_held() const { return static_cast<uint64_t>(tokens_) * bytes_per_token(); }
  // Bytes of the pool blocks the segment holds (what admission counts).
  uint64_t block_bytes_held() const { return blocks_.size() * block_bytes(head_dim_, dtype_); }
  int64_t blocks_held() const { return static_cast<int64_t>(blocks_.size()); }
  uint64_t bytes_per_token() const { return bytes_per_token(head_dim_, dtype_); }

 private:
  int64_t row_bytes() const { return head_dim_ * kernels::kv_dtype_bytes(dtype_); }
  std::byte* keys_of(int64_t block) const { return blocks_[block].data(); }
  std::byte* values_of(int64_t block) const { return keys_of(block) + kBlockTokens * row_bytes(); }
  std::byte* key_at(int64_t i) const { return keys_of(i / kBlockTokens) + (i % kBlockTokens) * row_bytes(); }
  std::byte* value_at(int64_t i) const {
    return values_of(i / kBlockTokens) + (i % kBlockTokens) * row_bytes();
  }
  int32_t* positions_of(int64_t block) const {
    return reinterpret_cast<int32_t*>(values_of(block) + kBlockTokens * row_bytes());
  }
  float* mass_of(int64_t block) const { return reinterpret_cast<float*>(positions_of(block) + kBlockTokens); }
  // Makes room for one more token at index tokens_ (a new block when the last is full), at
  // `position` (after the last one's, else std::logic_error), its mass 0.
  void grow(int32_t position);

  int64_t head_dim_;
  kernels::KvDtype dtype_;
  bool track_mass_;
  KvMemoryPool* pool_;
  int64_t tokens_ = 0;
  std::vector<KvBlock> blocks_;
};

}  // namespace kvshrink::kvstore
