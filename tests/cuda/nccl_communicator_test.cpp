// The NCCL data plane (comm/nccl_communicator.h) against the MPI one on the same inputs, under
// mpirun -np 1 and 2, and make_planes_for_cuda's choice. Every rank decides alike whether to skip
// (agreed over MPI) and then calls every collective, so a failed expectation leaves no rank behind.
// Without a device every case but NoDeviceFailsEveryRank is skipped (CTest reports the run
// skipped); with ranks sharing a GPU the NCCL cases are skipped and the MPI fallback is tested.
#include "comm/nccl_communicator.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/collective_error.h"
#include "comm/data_plane_choice.h"
#include "comm/planes.h"
#include "comm/traffic.h"
#include "kernels/cuda/cuda_devices.h"
#include "support/mpi_test_main.h"

namespace kvshrink::comm {
namespace {

Communicator& mpi() {
  return testing::mpi_communicator();
}
const World& world() {
  return mpi().world();
}

// What this job has, agreed by every rank: the skip reason (empty: none) and this rank's choice.
struct Setting {
  int devices = 0;
  std::string no_device;   // not empty: some rank has no device (why)
  std::string shared_gpu;  // not empty: some node has more ranks than GPUs
  DataPlaneChoice choice;
};

const Setting& setting() {
  static const Setting agreed = [] {
    Setting s;
    std::string why;
    s.devices = static_cast<int>(kernels::cuda::cuda_devices(&why).size());
    std::vector<int64_t> flags = {s.devices == 0 ? 1 : 0, 0};
    if (s.devices > 0) {
      s.choice = choose_data_plane(world().local_rank, world().local_size, s.devices);
      flags[1] = s.choice.nccl ? 0 : 1;
    }
    mpi().all_reduce_max(flags);
    if (flags[0] != 0) s.no_device = why.empty() ? "on another rank's node" : why;
    if (flags[1] != 0) s.shared_gpu = "ranks share a GPU on a node; NCCL needs one GPU per rank";
    return s;
  }();
  return agreed;
}

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!setting().no_device.empty())
      GTEST_SKIP() << "skipped: no CUDA device (" << setting().no_device << ")";
    if (!setting().shared_gpu.empty()) GTEST_SKIP() << "skipped: " << setting().shared_gpu;
    if (!nccl_) nccl_ = std::make_unique<NcclCommunicator>(mpi(), setting().choice.device);
  }
  static void TearDownTestSuite() { nccl_.reset(); }

  NcclCommunicator& nccl() { return *nccl_; }

  static inline std::unique_ptr<NcclCommunicator> nccl_;  // one for the suite: setup takes ~1 s
};

// Multiples of 1/16 below 64 in magnitude: sums over a few ranks are exact in any order.
std::vector<float> exact_values(size_t n, int seed) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i)
    values[i] = static_cast<float>((seed * 7919 + i * 31) % 2001) / 16.0f - 62.5f;
  return values;
}

TEST_F(NcclCommunicatorTest, AllReduceSumEqualsMpi) {
  for (size_t n : {size_t{1}, size_t{1000}, (size_t{1} << 20) + 3, size_t{17}}) {  // grows, then reuses
    std::vector<float> on_nccl = exact_values(n, world().rank);
    std::vector<float> on_mpi = on_nccl;
    nccl().all_reduce_sum(on_nccl);
    mpi().all_reduce_sum(on_mpi);
    EXPECT_EQ(on_nccl, on_mpi) << "n=" << n;
  }
  std::vector<float> empty;
  EXPECT_NO_THROW(nccl().all_reduce_sum(empty));
}

TEST_F(NcclCommunicatorTest, AllReduceMaxEqualsMpi) {
  const int64_t rank = world().rank;
  std::vector<int64_t> on_nccl = {rank, -rank, rank << 40, rank == 0 ? INT64_MAX : INT64_MIN, INT64_MIN};
  std::vector<int64_t> on_mpi = on_nccl;
  nccl().all_reduce_max(on_nccl);
  mpi().all_reduce_max(on_mpi);
  EXPECT_EQ(on_nccl, on_mpi);
  EXPECT_EQ(on_nccl[0], world().size - 1);
}

// Gathers rank r's counts[r] values on both planes; they must agree.
void expect_gather_equal(NcclCommunicator& nccl, const std::vector<int64_t>& counts) {
  const std::vector<float> send = exact_values(counts[world().rank], world().rank + 1);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<float> on_nccl(total, -1.0f), on_mpi(total, -2.0f);
  nccl.all_gather(send, on_nccl, counts);
  mpi().all_gather(send, on_mpi, counts);
  EXPECT_EQ(on_nccl, on_mpi);
}

TEST_F(NcclCommunicatorTest, AllGatherUnevenCountsEqualsMpi) {
  std::vector<int64_t> counts(world().size, 1);  // {2}, {2, 1}: like 3 KV heads over the ranks
  counts[0] = 2;
  expect_gather_equal(nccl(), counts);
  for (int r = 0; r < world().size; ++r) counts[r] = 50000 + 7 * r;  // logits of a vocabulary shard
  expect_gather_equal(nccl(), counts);
}

TEST_F(NcclCommunicatorTest, AllGatherWithEmptyRankEqualsMpi) {
  std::vector<int64_t> counts(world().size);
  for (int r = 0; r < world().size; ++r) counts[r] = r % 2 == 1 ? 0 : 3 + r;
  expect_gather_equal(nccl(), counts);
  expect_gather_equal(nccl(), std::vector<int64_t>(world().size, 0));
}

TEST_F(NcclCommunicatorTest, AllGatherInt64EqualsMpi) {
  std::vector<int64_t> counts(world().size);
  for (int r = 0; r < world().size; ++r) counts[r] = r + 1;
  std::vector<int64_t> send(counts[world().rank]);
  for (size_t i = 0; i < send.size(); ++i) send[i] = (int64_t{world().rank} << 40) + static_cast<int64_t>(i);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<int64_t> on_nccl(total, -1), on_mpi(total, -2);
  nccl().all_gather(send, on_nccl, counts);
  mpi().all_gather(send, on_mpi, counts);
  EXPECT_EQ(on_nccl, on_mpi);
}

TEST_F(NcclCommunicatorTest, AllGatherRejectsBadCounts) {
  std::vector<float> send(1);
  std::vector<float> recv(world().size + 1);
  std::vector<int64_t> too_few(world().size - 1, 1);
  EXPECT_THROW(nccl().all_gather(send, recv, too_few), std::invalid_argument);
  std::vector<int64_t> wrong_own(world().size, 2);
  EXPECT_THROW(nccl().all_gather(send, recv, wrong_own), std::invalid_argument);
  std::vector<int64_t> negative(world().size, 1);
  negative[world().size - 1] = -1;
  EXPECT_THROW(nccl().all_gather(send, recv, negative), std::invalid_argument);
}

TEST_F(NcclCommunicatorTest, BroadcastFromEveryRootEqualsMpi) {
  for (int root = 0; root < world().size; ++root) {
    std::vector<std::byte> on_nccl(4097);
    for (size_t i = 0; i < on_nccl.size(); ++i) on_nccl[i] = std::byte(world().rank * 31 + i);
    std::vector<std::byte> on_mpi = on_nccl;
    nccl().broadcast(on_nccl, root);
    mpi().broadcast(on_mpi, root);
    EXPECT_EQ(on_nccl, on_mpi) << "root " << root;
  }
  std::string text = world().is_coordinator() ? "prompt text" : "";
  nccl().broadcast_string(text, 0);
  EXPECT_EQ(text, "prompt text");
  std::vector<std::byte> data(4);
  EXPECT_THROW(nccl().broadcast(data, world().size), std::invalid_argument);
  EXPECT_THROW(nccl().broadcast(data, -1), std::invalid_argument);
}

TEST_F(NcclCommunicatorTest, DuplicateBarrierAndKeepAlive) {
  std::unique_ptr<Communicator> duplicate = nccl().duplicate();
  ASSERT_NE(dynamic_cast<NcclCommunicator*>(duplicate.get()), nullptr);
  EXPECT_EQ(duplicate->world().rank, world().rank);
  EXPECT_EQ(duplicate->all_gather_value(world().rank + 5), mpi().all_gather_value(world().rank + 5));
  if (world().is_coordinator()) nccl().keep_alive();
  EXPECT_NO_THROW(nccl().barrier());
}

// The same counts as the MPI backend's (tests/mpi/communicator_test.cpp), on a fresh duplicate.
TEST_F(NcclCommunicatorTest, CountsTrafficPerCollective) {
  std::unique_ptr<Communicator> duplicate = nccl().duplicate();
  auto& counted = dynamic_cast<NcclCommunicator&>(*duplicate);
  const int n = world().size;
  const int rank = world().rank;
  std::vector<float> reduced(100);
  counted.all_reduce_sum(reduced);
  std::vector<int64_t> flags(3);
  counted.all_reduce_max(flags);
  std::vector<int64_t> counts(n);
  for (int r = 0; r < n; ++r) counts[r] = r + 1;
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
  EXPECT_EQ(t.broadcast_root_bytes, rank == n - 1 ? 10u : 0u);
  EXPECT_EQ(t.barriers, 1);
}

// make_planes_for_cuda: NCCL when every node has a GPU per rank, otherwise the MPI data plane and
// one notice from rank 0. Runs with shared GPUs too (not skipped then).
TEST(MakePlanesForCuda, ChoosesTheDataPlaneAlikeOnEveryRank) {
  if (!setting().no_device.empty()) GTEST_SKIP() << "skipped: no CUDA device (" << setting().no_device << ")";
  Planes planes;
  planes.control = mpi().duplicate();
  planes.data = mpi().duplicate();
  ::testing::internal::CaptureStderr();
  make_planes_for_cuda(planes, setting().devices);
  const std::string printed = ::testing::internal::GetCapturedStderr();

  const bool nccl = setting().shared_gpu.empty();
  EXPECT_EQ(dynamic_cast<NcclCommunicator*>(planes.data.get()) != nullptr, nccl);
  const bool notice = printed.find("kvshrink: notice: ") != std::string::npos;
  EXPECT_EQ(notice, !nccl && world().is_coordinator()) << printed;
  std::vector<float> on_data = exact_values(1000, world().rank), on_mpi = on_data;
  planes.data->all_reduce_sum(on_data);
  mpi().all_reduce_sum(on_mpi);
  EXPECT_EQ(on_data, on_mpi);
}

// A node without a device fails every rank alike, before any CUDA call, and leaves the planes as
// they were (runs without a device).
TEST(MakePlanesForCuda, NoDeviceFailsEveryRank) {
  Planes planes;
  planes.control = mpi().duplicate();
  planes.data = mpi().duplicate();
  const Communicator* mpi_data = planes.data.get();
  try {
    make_planes_for_cuda(planes, 0);
    ADD_FAILURE() << "make_planes_for_cuda with no device did not throw";
  } catch (const JobError& error) {
    EXPECT_EQ(error.failing_rank(), 0);
    const std::string ranks =
        std::to_string(world().local_size) + (world().local_size == 1 ? " rank" : " ranks");
    EXPECT_EQ(std::string(error.what()),
              "rank 0: the CUDA backend found no CUDA device on this node (" + ranks + " here)");
  }
  EXPECT_EQ(planes.data.get(), mpi_data);  // the planes are as they were
  EXPECT_EQ(planes.data->all_gather_value(world().rank), mpi().all_gather_value(world().rank));
}

}  // namespace
}  // namespace kvshrink::comm
