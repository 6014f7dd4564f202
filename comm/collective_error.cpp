#include "comm/collective_error.h"

#include <cstdint>
#include <span>

namespace kvshrink::comm {

void check_all(Communicator& comm, bool ok, std::string_view message_if_not_ok) {
  const World& world = comm.world();
  // A failing rank r votes size - r, an ok rank 0: the max names the lowest failing rank.
  int64_t vote = ok ? 0 : world.size - world.rank;
  comm.all_reduce_max(std::span<int64_t>(&vote, 1));
  if (vote == 0) return;

  int failing_rank = world.size - static_cast<int>(vote);
  std::string message = world.rank == failing_rank ? std::string(message_if_not_ok) : std::string();
  comm.broadcast_string(message, failing_rank);
  throw JobError(message, failing_rank);
}

}  // namespace kvshrink::comm
