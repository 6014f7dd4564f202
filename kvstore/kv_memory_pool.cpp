#include "kvstore/kv_memory_pool.h"

#include <fmt/format.h>

#include <stdexcept>

namespace kvshrink::kvstore {

void KvMemoryPool::charge(uint64_t bytes) {
  if (capacity_ != 0 && in_use_ + bytes > capacity_) {
    throw std::runtime_error(
        fmt::format("KV memory exhausted: {:.1f} MiB held, {:.1f} MiB more asked, "
                    "capacity {:.1f} MiB (see --kv-memory, --budget)",
                    in_use_ / 1048576.0, bytes / 1048576.0, capacity_ / 1048576.0));
  }
  in_use_ += bytes;
  if (in_use_ > peak_) peak_ = in_use_;
}

void KvMemoryPool::release(uint64_t bytes) {
  in_use_ = bytes > in_use_ ? 0 : in_use_ - bytes;
}

}  // namespace kvshrink::kvstore
