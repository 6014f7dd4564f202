// `kvshrink info`'s device lines: the host CPU first, then the CUDA backend's state.
#include "kernels/devices.h"

#include <gtest/gtest.h>

namespace kvshrink {
namespace {

TEST(Devices, ListTheCpuThenTheCudaBackend) {
  const auto lines = kernels::device_lines();
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("cpu: ", 0), 0u) << lines[0];
  for (size_t i = 1; i < lines.size(); ++i) EXPECT_EQ(lines[i].rfind("cuda", 0), 0u) << lines[i];
  if (!kernels::cuda_built()) {
    EXPECT_NE(lines[1].find("not built"), std::string::npos) << lines[1];
  }
}

}  // namespace
}  // namespace kvshrink
