// The head profile made from retrieval scores (engine/profiling/retrieval_head_profile.h): floored
// scores, the method and shape recorded, and the strongest heads in order.
#include "engine/profiling/retrieval_head_profile.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvshrink::engine {
namespace {

TEST(RetrievalHeadProfile, FloorsScoresAndRecordsTheShape) {
  LlamaConfig config;
  config.n_layers = 2;
  config.n_head_kv = 2;
  const RetrievalHeadScores scores{.probes = 6, .scores = {0.25f, 0.0f, 1e-9f, 0.5f}};
  const auto profile = retrieval_head_profile(scores, "model id", config);
  EXPECT_EQ(profile.model, "model id");
  EXPECT_EQ(profile.method, "headkv-r2 (niah)");
  EXPECT_EQ(profile.probes, 6);
  EXPECT_EQ(profile.n_layers, 2);
  EXPECT_EQ(profile.n_kv_heads, 2);
  ASSERT_EQ(profile.importance.size(), 4u);
  EXPECT_EQ(profile.importance[0], 0.25);
  EXPECT_EQ(profile.importance[1], static_cast<double>(1e-6f));
  EXPECT_EQ(profile.importance[2], static_cast<double>(1e-6f));
  EXPECT_EQ(profile.importance[3], 0.5);
}

TEST(RetrievalHeadProfile, StrongestHeadsHighestFirst) {
  const std::vector<float> scores = {0.1f, 0.7f, 0.3f, 0.9f, 0.2f};
  EXPECT_EQ(strongest_heads(scores, 3), (std::vector<size_t>{3, 1, 2}));
  EXPECT_EQ(strongest_heads(scores, 8).size(), 5u);
  EXPECT_TRUE(strongest_heads({}, 8).empty());
}

}  // namespace
}  // namespace kvshrink::engine
