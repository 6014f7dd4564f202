#include "comm/communicator.h"

namespace kvshrink::comm {

void Communicator::broadcast_string(std::string& text, int root) {
  auto length = broadcast_value<uint64_t>(text.size(), root);
  text.resize(length);
  broadcast(std::as_writable_bytes(std::span<char>(text)), root);
}

}  // namespace kvshrink::comm
