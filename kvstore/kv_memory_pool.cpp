#include "kvstore/kv_memory_pool.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "kernels/backend.h"

namespace kvshrink::kvstore {

KvBlock& KvBlock::operator=(KvBlock&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    pool_ = other.pool_;
    other.data_ = nullptr;
  }
  return *this;
}

void KvBlock::release() {
  if (data_) pool_->give_back(data_);
  data_ = nullptr;
}

KvMemoryPool::KvMemoryPool(uint64_t capacity_bytes, uint64_t block_bytes, kernels::Backend* backend)
    : capacity_bytes_(capacity_bytes), block_bytes_(block_bytes), backend_(backend) {
  if (block_bytes == 0 || block_bytes % 64 != 0) {
    throw std::invalid_argument(
        fmt::format("KV block size {} is not a positive multiple of 64", block_bytes));
  }
  capacity_blocks_ = capacity_bytes == 0 ? std::numeric_limits<int64_t>::max()
                                         : static_cast<int64_t>(capacity_bytes / block_bytes);
}

KvMemoryPool::~KvMemoryPool() {
  const uint64_t slab_bytes = block_bytes_ * kSlabBlocks;
  for (std::byte* slab : slabs_) {
    if (backend_) {
      backend_->free_kv_memory(slab, slab_bytes);
    } else {
      ::operator delete (slab, std::align_val_t{64});
    }
  }
}

void KvMemoryPool::add_slab() {
  const uint64_t slab_bytes = block_bytes_ * kSlabBlocks;
  auto* slab = backend_ ? static_cast<std::byte*>(backend_->allocate_kv_memory(slab_bytes))
                        : static_cast<std::byte*>(::operator new (slab_bytes, std::align_val_t{64}));
  slabs_.push_back(slab);
  for (int64_t i = kSlabBlocks - 1; i >= 0; --i) free_.push_back(slab + i * block_bytes_);
}

KvBlock KvMemoryPool::allocate() {
  if (in_use_ >= capacity_blocks_) {
    throw KvMemoryExhausted(
        fmt::format("KV memory exhausted: all {} blocks ({:.1f} MiB) are in use (see --kv-memory, --budget)",
                    capacity_blocks_, static_cast<double>(capacity_bytes_) / 1048576.0));
  }
  if (free_.empty()) add_slab();
  std::byte* block = free_.back();
  free_.pop_back();
  ++in_use_;
  peak_ = std::max(peak_, in_use_);
  return KvBlock(block, this);
}

void KvMemoryPool::give_back(std::byte* block) {
  free_.push_back(block);
  --in_use_;
}

}  // namespace kvshrink::kvstore
