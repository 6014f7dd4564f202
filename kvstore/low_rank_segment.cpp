#include "kvstore/low_rank_segment.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "kernels/cpu/kv_elements.h"

namespace kvshrink::kvstore {

LowRankBlock::LowRankBlock(int64_t rank, int64_t sharers, kernels::KvDtype dtype,
                           const float* key_coefficients, const float* value_coefficients,
                           const int32_t* positions, int64_t n, KvMemoryPool& pool)
    : rank_(rank), dtype_(dtype), sharers_(sharers), tokens_(n), block_bytes_(pool.block_bytes()) {
  per_block_ = rank < 1 ? 0 : static_cast<int64_t>(block_bytes_ / bytes_per_token(rank, dtype));
  if (rank < 1 || sharers < 1 || n < 0 || per_block_ < 1) {
    throw std::invalid_argument(
        fmt::format("low-rank block: rank {} does not fit a {}-byte KV block", rank, block_bytes_));
  }
  for (int64_t first = 0; first < n; first += per_block_) {
    const int64_t count = std::min(per_block_, n - first);
    blocks_.push_back(pool.allocate());
    std::byte* keys = blocks_.back().data();
    std::byte* values = keys + coefficient_bytes();
    auto* block_positions = reinterpret_cast<int32_t*>(values + coefficient_bytes());
    kernels::cpu::kv_from_f32(key_coefficients + first * rank, dtype_, keys, count * rank);
    kernels::cpu::kv_from_f32(value_coefficients + first * rank, dtype_, values, count * rank);
    std::copy_n(positions + first, count, block_positions);
  }
}

std::vector<int32_t> LowRankBlock::positions() const {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(tokens_));
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const int64_t count = std::min(per_block_, tokens_ - static_cast<int64_t>(b) * per_block_);
    out.insert(out.end(), positions_of(b), positions_of(b) + count);
  }
  return out;
}

void LowRankBlock::buckets(std::vector<kernels::LowRankBucket>& out) const {
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const int64_t count = std::min(per_block_, tokens_ - static_cast<int64_t>(b) * per_block_);
    out.push_back({keys_of(b), values_of(b), positions_of(b), count, rank_, dtype_});
  }
}

}  // namespace kvshrink::kvstore
