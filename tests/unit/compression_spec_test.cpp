// CompressionSpec checks that need no model: a fraction budget below what the press always keeps,
// and press parameters past the context.
#include "engine/compression/compression_spec.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "kvstore/press_registry.h"

namespace kvshrink::engine {
namespace {

CompressionSpec spec_of(const std::string& method, double fraction) {
  CompressionSpec spec;
  spec.method = method;
  spec.params = kvstore::default_params(method);
  spec.budget_fraction = fraction;
  return spec;
}

std::string error_of(const CompressionSpec& spec, int64_t n_positions) {
  try {
    check_budget_reachable(spec, n_positions);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(CheckBudgetReachable, FractionBelowTheWindowIsRefused) {
  EXPECT_NE(error_of(spec_of("snapkv", 1e-9), 56).find("snapkv cannot meet the budget"), std::string::npos);
  EXPECT_NE(error_of(spec_of("snapkv", 0.06), 512).find("31 tokens per kv head, fewer than the 32"),
            std::string::npos)
      << error_of(spec_of("snapkv", 0.06), 512);
  EXPECT_EQ(error_of(spec_of("snapkv", 0.0625), 512), "");  // 32 tokens: the window itself
  EXPECT_NE(error_of(spec_of("streamingllm", 0.01), 200).find("attention sinks"), std::string::npos);
}

TEST(CheckBudgetReachable, PressesThatKeepOneTokenAndFullBudgetsPass) {
  EXPECT_EQ(error_of(spec_of("knorm", 1e-9), 4096), "");
  EXPECT_EQ(error_of(spec_of("tova", 1e-9), 4096), "");
  EXPECT_EQ(error_of(spec_of("snapkv", 1.0), 10), "");  // shorter than the window: all of it
  EXPECT_EQ(error_of(CompressionSpec{}, 10), "");       // full KV
}

TEST(CheckFitsContext, WindowSinksAndPoolKernelPastTheContextAreRefused) {
  auto spec = spec_of("snapkv", 0.5);
  EXPECT_NO_THROW(check_fits_context(spec, 8192));
  spec.params.window = 10000;
  EXPECT_THROW(check_fits_context(spec, 8192), std::invalid_argument);
  spec = spec_of("streamingllm", 0.5);
  spec.params.sinks = 9000;
  EXPECT_THROW(check_fits_context(spec, 8192), std::invalid_argument);
  spec = spec_of("snapkv", 0.5);
  spec.params.pool_kernel = 8193;
  EXPECT_THROW(check_fits_context(spec, 8192), std::invalid_argument);
}

TEST(ChunkSize, LabelNamesItAndBadValuesAreRefused) {
  auto spec = spec_of("snapkv", 0.25);
  EXPECT_EQ(spec.params.chunk_size, 1);
  EXPECT_EQ(spec.label(), "snapkv 25%");  // chunk 1: the label of before
  spec.params.chunk_size = 8;
  EXPECT_EQ(spec.label(), "snapkv 25% chunk 8");
  EXPECT_NO_THROW(validate(spec));
  spec.params.chunk_size = 0;
  EXPECT_THROW(validate(spec), std::invalid_argument);
  auto dynakv = spec_of("dynakv", 0.5);
  dynakv.params.chunk_size = 4;
  EXPECT_THROW(validate(dynakv), std::invalid_argument);  // evicts nothing
}

}  // namespace
}  // namespace kvshrink::engine
