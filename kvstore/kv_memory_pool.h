// The KV memory of one rank: fixed-size blocks carved from slabs that the Backend allocates (host
// memory on CPU, device memory on a GPU backend), under a byte capacity. Every head segment holds
// its tokens in blocks from here, so "can this fit?" is a question about free blocks, asked before
// work is admitted, and compaction gives blocks back at once. Not thread-safe (one pool per rank,
// used from the rank's engine thread).
//
// Slabs of kSlabBlocks blocks are allocated on demand up to the capacity and kept for reuse; a
// freed block goes on a free list. Blocks must be returned before the pool is destroyed (stores
// hold a shared_ptr to their pool).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace kvshrink::kernels {
class Backend;
}

namespace kvshrink::kvstore {

class KvMemoryPool;

// Thrown when the pool has no free block left under its capacity.
class KvMemoryExhausted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One block, returned to its pool when destroyed. Move-only.
class KvBlock {
 public:
  KvBlock() = default;
  KvBlock(std::byte* data, KvMemoryPool* pool) : data_(data), pool_(pool) {}
  KvBlock(KvBlock&& other) noexcept : data_(other.data_), pool_(other.pool_) { other.data_ = nullptr; }
  KvBlock& operator=(KvBlock&& other) noexcept;
  KvBlock(const KvBlock&) = delete;
  KvBlock& operator=(const KvBlock&) = delete;
  ~KvBlock() { release(); }

  std::byte* data() const { return data_; }

 private:
  void release();
  std::byte* data_ = nullptr;
  KvMemoryPool* pool_ = nullptr;
};

class KvMemoryPool {
 public:
  static constexpr int64_t kSlabBlocks = 64;

  // capacity_bytes 0 = unlimited. backend null = host memory (tests, tools without an engine).
  KvMemoryPool(uint64_t capacity_bytes, uint64_t block_bytes, kernels::Backend* backend = nullptr);
  ~KvMemoryPool();
  KvMemoryPool(const KvMemoryPool&) = delete;
  KvMemoryPool& operator=(const KvMemoryPool&) = delete;

  // Throws KvMemoryExhausted when every block under the capacity is in use.
  KvBlock allocate();

  uint64_t block_bytes() const { return block_bytes_; }
  // Blocks the capacity allows (INT64_MAX when unlimited), in use now, at most so far.
  int64_t capacity_blocks() const { return capacity_blocks_; }
  int64_t blocks_in_use() const { return in_use_; }
  int64_t free_blocks() const { return capacity_blocks_ - in_use_; }
  bool can_allocate(int64_t blocks) const { return blocks <= free_blocks(); }
  // Bytes: capacity (0 = unlimited), held in blocks now, at most so far.
  uint64_t capacity() const { return capacity_bytes_; }
  uint64_t in_use() const { return static_cast<uint64_t>(in_use_) * block_bytes_; }
  uint64_t peak() const { return static_cast<uint64_t>(peak_) * block_bytes_; }

 private:
  friend class KvBlock;
  void give_back(std::byte* block);
  void add_slab();

  uint64_t capacity_bytes_;
  uint64_t block_bytes_;
  int64_t capacity_blocks_;
  kernels::Backend* backend_;
  std::vector<std::byte*> slabs_;
  std::vector<std::byte*> free_;
  int64_t in_use_ = 0;
  int64_t peak_ = 0;
};

}  // namespace kvshrink::kvstore
