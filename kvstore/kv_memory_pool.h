// The KV memory of one rank: every store charges the bytes it holds here, so a server can admit
// sequences by what compression really frees. capacity 0 = unlimited. Not thread-safe (one pool
// per rank, used from the rank's one engine thread).
#pragma once

#include <cstdint>

namespace kvshrink::kvstore {

class KvMemoryPool {
 public:
  explicit KvMemoryPool(uint64_t capacity_bytes = 0) : capacity_(capacity_bytes) {}

  // Throws KvMemoryExhausted (a std::runtime_error) when the capacity would be exceeded.
  void charge(uint64_t bytes);
  void release(uint64_t bytes);

  uint64_t capacity() const { return capacity_; }
  uint64_t in_use() const { return in_use_; }
  uint64_t peak() const { return peak_; }

 private:
  uint64_t capacity_;
  uint64_t in_use_ = 0;
  uint64_t peak_ = 0;
};

}  // namespace kvshrink::kvstore
