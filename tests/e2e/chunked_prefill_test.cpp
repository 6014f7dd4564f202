// Prefill in chunks (any max_batch) and token-by-token decode give the same logits as one pass:
// to float reordering with f32 KV, and within kF16KvTolerance with the default 16-bit KV (its
// rounding turns reordering differences into one-unit flips of some halves).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "engine/gguf/gguf_file.h"
#include "support/test_model.h"

namespace kvshrink {
namespace {

using engine::LogitsFor;
using engine::TokenId;

constexpr float kF16KvTolerance = 5e-2f;

TEST(ChunkedPrefill, AnyChunkSizeGivesTheSameLogits) {
  std::vector<TokenId> tokens(150);
  std::iota(tokens.begin(), tokens.end(), 1000);
  const auto file = engine::GgufFile::open(testing::model_path());
  for (const auto dtype : {kernels::KvDtype::kF32, kernels::KvDtype::kF16}) {
    auto& one_pass =
        dtype == kernels::KvDtype::kF32 ? *testing::f32_kv_model().model : *testing::default_model().model;
    kernels::cpu::CpuBackend backend;
    engine::LlamaModel chunked(file, testing::test_communicator(), backend, /*max_batch=*/7, dtype);
    auto kv = one_pass.make_kv_store();
    const auto expected = one_pass.forward(tokens, kv, LogitsFor::kEveryToken);
    auto chunked_kv = chunked.make_kv_store();
    const auto logits = chunked.forward(tokens, chunked_kv, LogitsFor::kEveryToken);
    const float difference = testing::max_abs_difference(logits, expected);
    std::printf("%s KV: max |chunked - one pass| = %.2e\n", kernels::kv_dtype_name(dtype).c_str(),
                difference);
    EXPECT_LE(difference, dtype == kernels::KvDtype::kF32 ? 1e-3f : kF16KvTolerance);
    EXPECT_EQ(chunked_kv.next_position(), 150);
    EXPECT_EQ(chunked_kv.bytes_held(), kv.bytes_held());
  }
  auto& one_pass = *testing::f32_kv_model().model;
  auto kv = one_pass.make_kv_store();
  const auto expected = one_pass.forward(tokens, kv, LogitsFor::kEveryToken);

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
