#include "comm/traffic.h"

#include <fmt/format.h>

#include <cstdlib>

namespace kvshrink::comm {

std::string traffic_json(const Traffic& t, const World& world, std::string_view plane) {
  return fmt::format(
      R"({{"plane":"{}","rank":{},"ranks":{},"all_reduce":{{"calls":{},"bytes":{}}},)"
      R"("all_gather":{{"calls":{},"bytes":{},"sent":{}}},"broadcast":{{"calls":{},"bytes":{},"root_bytes":{}}},)"
      R"("barrier":{{"calls":{}}}}})",
      plane, world.rank, world.size, t.all_reduce.calls, t.all_reduce.bytes, t.all_gather.calls,
      t.all_gather.bytes, t.all_gather_sent, t.broadcast.calls, t.broadcast.bytes, t.broadcast_root_bytes,
      t.barriers);
}

bool traffic_report_requested() {
  const char* value = std::getenv("KVSHRINK_COMM_STATS");
  return value != nullptr && *value != '\0' && std::string_view(value) != "0";
}

}  // namespace kvshrink::comm
