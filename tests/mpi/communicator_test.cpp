// The MPI communicator and check_all under mpirun -np 1, 2, 3. Every test runs on every rank and
// calls its collectives unconditionally, so a failed expectation never leaves a rank behind.
#include "comm/communicator.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_error.h"
#include "comm/mpi_communicator.h"
#include "comm/traffic.h"
#include "support/mpi_test_main.h"

namespace kvshrink::comm {
namespace {

Communicator& communicator() {
  return testing::mpi_communicator();
}
const World& world() {
  return communicator().world();
}

TEST(Communicator, WorldIsConsistent) {
  EXPECT_GE(world().rank, 0);
  EXPECT_LT(world().rank, world().size);
  EXPECT_GE(world().local_rank, 0);
  EXPECT_LT(world().local_rank, world().local_size);
  EXPECT_LE(world().local_size, world().size);
  EXPECT_EQ(world().is_coordinator(), world().rank == 0);
  // All ranks of the test run on this machine.
  EXPECT_EQ(world().local_size, world().size);
  EXPECT_EQ(world().local_rank, world().rank);
}

TEST(Communicator, AllReduceSum) {
  const int n = world().size;
  std::vector<float> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(world().rank + i);
  communicator().all_reduce_sum(data);
  for (size_t i = 0; i < data.size(); ++i) {
    EXPECT_EQ(data[i], static_cast<float>(n * i + n * (n - 1) / 2)) << "i=" << i;
  }
}

TEST(Communicator, AllReduceMax) {
  const int64_t rank = world().rank;
  std::vector<int64_t> data = {rank, -rank, rank << 40, rank == 0 ? INT64_MAX : INT64_MIN};
  communicator().all_reduce_max(data);
  EXPECT_EQ(data, (std::vector<int64_t>{world().size - 1, 0, int64_t{world().size - 1} << 40, INT64_MAX}));
}

// Gathers rank r's counts[r] values r * 100 + i and checks the concatenation.
void expect_gather(const std::vector<int64_t>& counts) {
  std::vector<float> send(counts[world().rank]);
  for (size_t i = 0; i < send.size(); ++i) send[i] = static_cast<float>(world().rank * 100 + i);
  std::vector<float> recv(std::accumulate(counts.begin(), counts.end(), int64_t{0}), -1.0f);
  communicator().all_gather(send, recv, counts);

  std::vector<float> expected;
  for (int r = 0; r < world().size; ++r) {
    for (int64_t i = 0; i < counts[r]; ++i) expected.push_back(static_cast<float>(r * 100 + i));
  }
  EXPECT_EQ(recv, expected);
}

TEST(Communicator, AllGatherUnevenCounts) {
  // {2}, {2, 1}, {2, 1, 1}: like 3 KV heads split over the ranks.
  std::vector<int64_t> counts(world().size, 1);
  counts[0] = 2;
  expect_gather(counts);
}

TEST(Communicator, AllGatherWithEmptyRank) {
  std::vector<int64_t> counts(world().size);
  for (int r = 0; r < world().size; ++r) counts[r] = r % 2 == 1 ? 0 : 3 + r;
  expect_gather(counts);
}

TEST(Communicator, AllGatherRejectsBadCounts) {
  std::vector<float> send(1);
  std::vector<float> recv(world().size + 1);
  std::vector<int64_t> too_few(world().size - 1, 1);
  EXPECT_THROW(communicator().all_gather(send, recv, too_few), std::invalid_argument);
  std::vector<int64_t> wrong_own(world().size, 2);
  EXPECT_THROW(communicator().all_gather(send, recv, wrong_own), std::invalid_argument);
  std::vector<int64_t> too_many(world().size, int64_t{1} << 31);
  EXPECT_THROW(communicator().all_gather(send, recv, too_many), std::length_error);
}

TEST(Communicator, AllGatherInt64UnevenCounts) {
  // Rank r sends r + 1 values beyond 32 bits: (r << 40) + i.
  std::vector<int64_t> counts(world().size);
  for (int r = 0; r < world().size; ++r) counts[r] = r + 1;
  std::vector<int64_t> send(counts[world().rank]);
  for (size_t i = 0; i < send.size(); ++i) send[i] = (int64_t{world().rank} << 40) + static_cast<int64_t>(i);
  std::vector<int64_t> recv(std::accumulate(counts.begin(), counts.end(), int64_t{0}), -1);
  communicator().all_gather(send, recv, counts);

  std::vector<int64_t> expected;
  for (int r = 0; r < world().size; ++r) {
    for (int64_t i = 0; i < counts[r]; ++i) expected.push_back((int64_t{r} << 40) + i);
  }
  EXPECT_EQ(recv, expected);
  std::vector<int64_t> wrong_own(world().size, 0);
  EXPECT_THROW(communicator().all_gather(send, recv, wrong_own), std::invalid_argument);
}

TEST(Communicator, AllGatherValueGivesOneValuePerRank) {
  std::vector<int64_t> expected(world().size);
  for (int r = 0; r < world().size; ++r) expected[r] = 1000 * r - (int64_t{1} << 50);
  EXPECT_EQ(communicator().all_gather_value(1000 * world().rank - (int64_t{1} << 50)), expected);
}

TEST(Communicator, DuplicateSpansTheSameRanks) {
  std::unique_ptr<Communicator> duplicate = communicator().duplicate();
  EXPECT_EQ(duplicate->world().rank, world().rank);
  EXPECT_EQ(duplicate->world().size, world().size);
  EXPECT_EQ(duplicate->world().local_rank, world().local_rank);
  EXPECT_EQ(duplicate->all_gather_value(world().rank + 5), communicator().all_gather_value(world().rank + 5));
}

// Rank 0 broadcasts 1 on the original, then 2 on the duplicate; the other ranks receive on the
// duplicate first. Over one communicator the first receive would match the first broadcast (1).
// Small broadcasts complete at the root without waiting for the receivers, so this cannot hang.
TEST(Communicator, DuplicateKeepsMessagesApart) {
  std::unique_ptr<Communicator> duplicate = communicator().duplicate();
  if (world().is_coordinator()) {
    communicator().broadcast_value<int64_t>(1, 0);
    duplicate->broadcast_value<int64_t>(2, 0);
  } else {
    EXPECT_EQ(duplicate->broadcast_value<int64_t>(0, 0), 2);
    EXPECT_EQ(communicator().broadcast_value<int64_t>(0, 0), 1);
  }
}

TEST(Communicator, KeepAliveIsNotCollective) {
  if (world().is_coordinator()) {
    for (int i = 0; i < 3; ++i) communicator().keep_alive();
  }
  EXPECT_NO_THROW(communicator().barrier());
}

TEST(Communicator, BroadcastBytesFromEveryRoot) {
  for (int root = 0; root < world().size; ++root) {
    std::vector<std::byte> data(4097, std::byte(world().rank));
    communicator().broadcast(data, root);
    EXPECT_EQ(data, std::vector<std::byte>(4097, std::byte(root))) << "root " << root;
  }
}

TEST(Communicator, BroadcastRejectsBadRoot) {
  std::vector<std::byte> data(4);
  EXPECT_THROW(communicator().broadcast(data, world().size), std::invalid_argument);
  EXPECT_THROW(communicator().broadcast(data, -1), std::invalid_argument);
}

TEST(Communicator, BroadcastTypedValues) {
  const int root = world().size - 1;
  const bool is_root = world().rank == root;

  EXPECT_EQ(communicator().broadcast_value<double>(is_root ? 2.5 : 0.0, root), 2.5);

  std::vector<int32_t> values(3, is_root ? 7 : world().rank);
  communicator().broadcast_values(std::span<int32_t>(values), root);
  EXPECT_EQ(values, (std::vector<int32_t>{7, 7, 7}));

  std::vector<int64_t> vector = is_root ? std::vector<int64_t>{5, -6, 1LL << 50} : std::vector<int64_t>(9);
  communicator().broadcast_vector(vector, root);
  EXPECT_EQ(vector, (std::vector<int64_t>{5, -6, 1LL << 50}));

  std::vector<float> empty = is_root ? std::vector<float>{} : std::vector<float>{1.0f};
  communicator().broadcast_vector(empty, root);
  EXPECT_TRUE(empty.empty());
}

TEST(Communicator, BroadcastString) {
  using namespace std::string_literals;
  const std::string sent = "prompt with \0 byte and ünïcode"s;
  std::string text = world().is_coordinator() ? sent : "something else, longer than the prompt text";
  communicator().broadcast_string(text, 0);
  EXPECT_EQ(text, sent);

  std::string empty = world().is_coordinator() ? "" : "not empty";
  communicator().broadcast_string(empty, 0);
  EXPECT_EQ(empty, "");
}

TEST(Communicator, Barrier) {
  for (int i = 0; i < 3; ++i) EXPECT_NO_THROW(communicator().barrier());
}

// Each collective counts the message it was handed (comm/traffic.h), on a fresh duplicate.
TEST(Communicator, CountsTrafficPerCollective) {
  std::unique_ptr<Communicator> duplicate = communicator().duplicate();
  auto& counted = dynamic_cast<MpiCommunicator&>(*duplicate);
  const int n = world().size;
  const int rank = world().rank;
  std::vector<float> reduced(100);
  counted.all_reduce_sum(reduced);
  std::vector<int64_t> flags(3);
  counted.all_reduce_max(flags);
  std::vector<int64_t> counts(n);
  for (int r = 0; r < n; ++r) counts[r] = r + 1;  // rank r sends r + 1 floats
  std::vector<float> send(rank + 1), recv(n * (n + 1) / 2);
  counted.all_gather(send, recv, counts);
  std::vector<std::byte> bytes(10);
  counted.broadcast(bytes, n - 1);
  counted.barrier();

  const Traffic& t = counted.traffic();
  EXPECT_EQ(t.all_reduce.calls, 2);
  EXPECT_EQ(t.all_reduce.bytes, 100 * sizeof(float) + 3 * sizeof(int64_t));
  EXPECT_EQ(t.all_gather.calls, 1);
  EXPECT_EQ(t.all_gather.bytes, recv.size() * sizeof(float));
  EXPECT_EQ(t.all_gather_sent, (rank + 1) * sizeof(float));
  EXPECT_EQ(t.broadcast.calls, 1);
  EXPECT_EQ(t.broadcast.bytes, 10u);
  EXPECT_EQ(t.broadcast_root_bytes, rank == n - 1 ? 10u : 0u);
  EXPECT_EQ(t.barriers, 1);
  EXPECT_EQ(traffic_json(t, world(), "data").rfind(R"({"plane":"data","rank":)", 0), 0u);
}

// Runs check_all and returns the JobError it threw, if any.
std::optional<JobError> check_all_result(bool ok, const std::string& message) {
  try {
    check_all(communicator(), ok, message);
  } catch (const JobError& error) {
    return error;
  }
  return std::nullopt;
}

std::string failure_message(int rank) {
  return "rank " + std::to_string(rank) + " saw a bad prompt";
}

TEST(CheckAll, AllOkDoesNotThrow) {
  EXPECT_FALSE(check_all_result(true, "unused").has_value());
}

TEST(CheckAll, OneFailingRankFailsEveryRank) {
  const int failing = world().size - 1;
  auto error = check_all_result(world().rank != failing, failure_message(world().rank));
  ASSERT_TRUE(error.has_value());
  EXPECT_STREQ(error->what(), failure_message(failing).c_str());
  EXPECT_EQ(error->failing_rank(), failing);
}

TEST(CheckAll, LowestFailingRanksMessageWins) {
  // Ranks 1.. fail (with np 1 nobody does), then every rank fails: rank 1's, then rank 0's message.
  auto error = check_all_result(world().rank == 0, failure_message(world().rank));
  if (world().size == 1) {
    EXPECT_FALSE(error.has_value());
  } else {
    ASSERT_TRUE(error.has_value());
    EXPECT_STREQ(error->what(), failure_message(1).c_str());
    EXPECT_EQ(error->failing_rank(), 1);
  }

  auto all_fail = check_all_result(false, failure_message(world().rank));
  ASSERT_TRUE(all_fail.has_value());
  EXPECT_STREQ(all_fail->what(), failure_message(0).c_str());
  EXPECT_EQ(all_fail->failing_rank(), 0);
}

}  // namespace
}  // namespace kvshrink::comm
