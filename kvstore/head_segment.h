// The tokens of one (sequence, layer, kv-head) kept at full dimension. Each token keeps its
// original position; keys are stored with RoPE applied. Compressed representations (evicted
// tokens, low-rank coefficients) become further segment kinds beside this one.
//
// Layout: keys and values [tokens x head_dim] float32, row-major; positions [tokens], ascending.
#pragma once

#include <cstdint>
#include <vector>

namespace kvshrink::kvstore {

class HeadSegment {
 public:
  explicit HeadSegment(int64_t head_dim) : head_dim_(head_dim) {}

  void reserve(int64_t tokens);
  void append(const float* key, const float* value, int32_t position);
  void clear();

  int64_t head_dim() const { return head_dim_; }
  int64_t tokens() const { return static_cast<int64_t>(positions_.size()); }
  const float* keys() const { return keys_.data(); }
  const float* values() const { return values_.data(); }
  const int32_t* positions() const { return positions_.data(); }
  // Bytes of K, V and positions for the tokens held.
  uint64_t bytes_held() const;
  // Bytes a full-dimension segment holds per token (K, V, position).
  uint64_t bytes_per_token() const { return 2 * head_dim_ * sizeof(float) + sizeof(int32_t); }

 private:
  int64_t head_dim_;
  std::vector<float> keys_;
  std::vector<float> values_;
  std::vector<int32_t> positions_;
};

}  // namespace kvshrink::kvstore
