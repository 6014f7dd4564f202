// What one communicator's collectives carried on this rank, counted as the caller passed it (the
// message sizes, before any algorithm splits them up). KVSHRINK_COMM_STATS=1 makes every rank print
// each engine plane's counts as one JSON line on stderr when the plane is destroyed (at exit):
//
//   kvshrink: comm-stats {"plane":"data","rank":1,"ranks":2,"all_reduce":{"calls":120,"bytes":...},...}
//
// Bytes per kind, for one rank:
//   all_reduce  the buffer reduced in place (sum and max alike)
//   all_gather  bytes: the gathered result (every rank's part); sent: this rank's own part
//   broadcast   bytes: the buffer; root_bytes: the share of it this rank sent as the root
//   barrier     calls only
// docs/cluster.md turns them into the bytes each rank sends per prefill token and decode step.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "comm/world.h"

namespace kvshrink::comm {

struct CollectiveCount {
  int64_t calls = 0;
  uint64_t bytes = 0;
};

struct Traffic {
  CollectiveCount all_reduce;
  CollectiveCount all_gather;
  uint64_t all_gather_sent = 0;
  CollectiveCount broadcast;
  uint64_t broadcast_root_bytes = 0;
  int64_t barriers = 0;
};

// The one-line JSON object above (without the "kvshrink: comm-stats " prefix).
std::string traffic_json(const Traffic& traffic, const World& world, std::string_view plane);

// True when KVSHRINK_COMM_STATS is set to anything but "" or "0".
bool traffic_report_requested();

}  // namespace kvshrink::comm
