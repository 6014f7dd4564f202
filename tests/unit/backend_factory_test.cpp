// kernels::make_backend: device names to backends.
#include "kernels/backend_factory.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace kvshrink {
namespace {

TEST(BackendFactory, CpuIsTheCpuBackend) {
  const auto backend = kernels::make_backend("cpu");
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->name(), "cpu");
}

TEST(BackendFactory, UnknownDeviceNamesTheKnownOnes) {
  try {
    kernels::make_backend("tpu");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'tpu'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("available: cpu"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvshrink
