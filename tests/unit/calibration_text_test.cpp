// interleave_chunks (engine/calibration/calibration_text.h): pieces of at most `chunk` tokens taken
// from each text in turn, a short last piece dropped, the budget cutting the last piece taken.
#include "engine/calibration/calibration_text.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace kvshrink::engine {
namespace {

// Token ids first, first + 1, ..., first + n - 1.
std::vector<TokenId> text_of(int32_t first, int32_t n) {
  std::vector<TokenId> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

// Texts of 100 and 70 tokens in chunks of 40: pieces A [0, 40), [40, 80) (the last 20 < 32 dropped)
// and B [0, 40) (the last 30 dropped), taken A, B, A.
const std::vector<std::vector<TokenId>> kTexts = {text_of(0, 100), text_of(1000, 70)};

TEST(InterleaveChunks, TakesPiecesFromEachTextInTurn) {
  const auto chunks = interleave_chunks(kTexts, 40, 1 << 20);
  EXPECT_EQ(chunks.lengths, (std::vector<int64_t>{40, 40, 40}));
  ASSERT_EQ(chunks.total(), 120);
  EXPECT_EQ(chunks.tokens[0], 0);
  EXPECT_EQ(chunks.tokens[39], 39);
  EXPECT_EQ(chunks.tokens[40], 1000);
  EXPECT_EQ(chunks.tokens[80], 40);
  EXPECT_EQ(chunks.tokens[119], 79);
}

TEST(InterleaveChunks, BudgetCutsTheLastPiece) {
  const auto cut = interleave_chunks(kTexts, 40, 115);
  EXPECT_EQ(cut.lengths, (std::vector<int64_t>{40, 40, 35}));
  EXPECT_EQ(cut.total(), 115);
  // 20 tokens left for the third piece are under kMinChunk: it is dropped.
  EXPECT_EQ(interleave_chunks(kTexts, 40, 100).lengths, (std::vector<int64_t>{40, 40}));
}

TEST(InterleaveChunks, EmptyAndShortTexts) {
  EXPECT_EQ(interleave_chunks({}, 40, 100).total(), 0);
  const std::vector<std::vector<TokenId>> short_texts = {text_of(0, 31), {}};
  EXPECT_EQ(interleave_chunks(short_texts, 40, 100).total(), 0);
  const std::vector<std::vector<TokenId>> exact = {text_of(0, 32)};
  EXPECT_EQ(interleave_chunks(exact, 40, 100).lengths, (std::vector<int64_t>{32}));
}

}  // namespace
}  // namespace kvshrink::engine
