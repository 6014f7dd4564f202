#include "comm/communicator.h"

namespace kvshrink::comm {

void Communicator::broadcast_string(std::string& text, int root) {
  auto length = broadcast_value<uint64_t>(text.size(), root);
  text.resize(length);
  broadcast(std::as_writable_bytes(std::span<char>(text)), root);
}

std::vector<int64_t> Communicator::all_gather_value(int64_t value) {
  std::vector<int64_t> values(world().size);
  all_gather(std::span<const int64_t>(&value, 1), values, std::vector<int64_t>(world().size, 1));
  return values;
}

}  // namespace kvshrink::comm
