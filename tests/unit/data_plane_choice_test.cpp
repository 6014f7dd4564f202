// The GPU data plane's choice (comm/data_plane_choice.h): NCCL with one GPU per rank, otherwise
// MPI with the ranks sharing the GPUs round robin and a notice; no device is an error.
#include "comm/data_plane_choice.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace kvshrink::comm {
namespace {

TEST(DataPlaneChoice, OneGpuPerRankUsesNcclOnTheLocalRanksGpu) {
  for (int local_rank = 0; local_rank < 4; ++local_rank) {
    const DataPlaneChoice choice = choose_data_plane(local_rank, 4, 8);
    EXPECT_TRUE(choice.nccl);
    EXPECT_EQ(choice.device, local_rank);
    EXPECT_EQ(choice.notice, "");
    EXPECT_EQ(choice.error, "");
  }
  EXPECT_TRUE(choose_data_plane(0, 1, 1).nccl);
  EXPECT_TRUE(choose_data_plane(7, 8, 8).nccl);
}

TEST(DataPlaneChoice, SharedGpusFallBackToMpiRoundRobin) {
  const int expected_devices[] = {0, 1, 2, 0, 1};
  for (int local_rank = 0; local_rank < 5; ++local_rank) {
    const DataPlaneChoice choice = choose_data_plane(local_rank, 5, 3);
    EXPECT_FALSE(choice.nccl);
    EXPECT_EQ(choice.device, expected_devices[local_rank]);
    EXPECT_EQ(choice.error, "");
  }
  EXPECT_EQ(choose_data_plane(1, 2, 1).device, 0);
}

TEST(DataPlaneChoice, FallbackNoticeIsOneLine) {
  EXPECT_EQ(choose_data_plane(0, 2, 1).notice,
            "kvshrink: notice: 2 ranks share 1 GPU on this node; the data plane uses MPI over host "
            "buffers (NCCL needs one GPU per rank)");
  EXPECT_EQ(data_plane_notice(4, 2, "the node of rank 4"),
            "kvshrink: notice: 4 ranks share 2 GPUs on the node of rank 4; the data plane uses MPI over "
            "host buffers (NCCL needs one GPU per rank)");
}

TEST(DataPlaneChoice, NoDeviceIsAnError) {
  const DataPlaneChoice choice = choose_data_plane(1, 2, 0);
  EXPECT_FALSE(choice.nccl);
  EXPECT_EQ(choice.notice, "");
  EXPECT_EQ(choice.error, "the CUDA backend found no CUDA device on this node (2 ranks here)");
  EXPECT_EQ(choose_data_plane(0, 1, 0).error,
            "the CUDA backend found no CUDA device on this node (1 rank here)");
}

TEST(DataPlaneChoice, RejectsImpossibleRanks) {
  EXPECT_THROW(choose_data_plane(2, 2, 1), std::invalid_argument);
  EXPECT_THROW(choose_data_plane(-1, 2, 1), std::invalid_argument);
  EXPECT_THROW(choose_data_plane(0, 0, 1), std::invalid_argument);
  EXPECT_THROW(choose_data_plane(0, 1, -1), std::invalid_argument);
}

}  // namespace
}  // namespace kvshrink::comm
