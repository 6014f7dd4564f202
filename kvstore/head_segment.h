// A run of one (sequence, layer, kv-head)'s tokens kept at full dimension. Each token keeps its
// original position; keys are stored with RoPE applied. Low-rank segments (coefficients in a
// head's basis) become a further kind beside this one.
//
// Layout: keys and values [tokens x head_dim] float32, row-major; positions [tokens], ascending;
// attention_mass [tokens] (H2O's accumulated attention) only when the store tracks it, else empty.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvshrink::kvstore {

class HeadSegment {
 public:
  HeadSegment(int64_t head_dim, bool track_mass) : head_dim_(head_dim), track_mass_(track_mass) {}

  void reserve(int64_t tokens);
  void append(const float* key, const float* value, int32_t position);
  // Copies token `index` of `from` (same head_dim) to the end of this segment.
  void append_from(const HeadSegment& from, int64_t index);
  void clear();
  // Gives unused capacity back to the allocator (after compaction: evicted tokens free memory).
  void shrink_to_fit();

  int64_t head_dim() const { return head_dim_; }
  int64_t tokens() const { return static_cast<int64_t>(positions_.size()); }
  bool tracks_mass() const { return track_mass_; }
  const float* keys() const { return keys_.data(); }
  const float* values() const { return values_.data(); }
  const int32_t* positions() const { return positions_.data(); }
  float* attention_mass() { return track_mass_ ? mass_.data() : nullptr; }
  const float* attention_mass() const { return track_mass_ ? mass_.data() : nullptr; }
  // Bytes of K, V and positions for the tokens held (the accumulated-attention scores are press
  // bookkeeping, counted by press_bytes()).
  uint64_t bytes_held() const;
  uint64_t press_bytes() const { return mass_.size() * sizeof(float); }
  // Bytes a full-dimension token costs (K, V, position).
  uint64_t bytes_per_token() const { return 2 * head_dim_ * sizeof(float) + sizeof(int32_t); }

 private:
  int64_t head_dim_;
  bool track_mass_;
  std::vector<float> keys_;
  std::vector<float> values_;
  std::vector<int32_t> positions_;
  std::vector<float> mass_;
};

}  // namespace kvshrink::kvstore
