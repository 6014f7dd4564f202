// Prefill in chunks (any max_batch) and token-by-token decode give the same logits as one pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "support/test_model.h"

namespace kvshrink {
namespace {

using engine::LogitsFor;
using engine::TokenId;

TEST(ChunkedPrefill, AnyChunkSizeGivesTheSameLogits) {
  auto& one_pass = *testing::default_model().model;
  const auto file = engine::GgufFile::open(testing::model_path());
  kernels::cpu::CpuBackend backend;
  engine::LlamaModel chunked(file, testing::test_communicator(), backend, /*max_batch=*/7);

  std::vector<TokenId> tokens(150);
  std::iota(tokens.begin(), tokens.end(), 1000);
  auto kv = one_pass.make_kv_store();
  const auto expected = one_pass.forward(tokens, kv, LogitsFor::kEveryToken);
  auto chunked_kv = chunked.make_kv_store();
  const auto logits = chunked.forward(tokens, chunked_kv, LogitsFor::kEveryToken);
  EXPECT_LE(testing::max_abs_difference(logits, expected), 1e-3f);
  EXPECT_EQ(chunked_kv.next_position(), 150);
  EXPECT_EQ(chunked_kv.bytes_held(), kv.bytes_held());

  // The last-token logits of a split prefill + one decode step equal row 149 of the one pass.
  auto split_kv = one_pass.make_kv_store();
  one_pass.forward(std::span(tokens).first(149), split_kv, LogitsFor::kLastToken);
  const auto last = one_pass.forward(std::span(tokens).subspan(149), split_kv, LogitsFor::kLastToken);
  const std::vector<float> row(expected.end() - static_cast<std::ptrdiff_t>(last.size()), expected.end());
  EXPECT_LE(testing::max_abs_difference(last, row), 1e-3f);
}

TEST(ChunkedPrefill, KvStoreHoldsEveryTokenAtItsPosition) {
  auto& model = *testing::default_model().model;
  std::vector<TokenId> tokens(40, 42);
  auto kv = model.make_kv_store();
  model.forward(tokens, kv, LogitsFor::kLastToken);
  const auto& config = model.config();
  for (int64_t layer = 0; layer < config.n_layers; ++layer) {
    for (int64_t head = 0; head < kv.owned_kv_heads(); ++head) {
      const auto& segment = kv.head(layer, head);
      ASSERT_EQ(segment.tokens(), 40);
      for (int32_t t = 0; t < 40; ++t) ASSERT_EQ(segment.positions()[t], t);
    }
  }
  EXPECT_EQ(kv.bytes_held(), kv.full_bytes());
}

}  // namespace
}  // namespace kvshrink
