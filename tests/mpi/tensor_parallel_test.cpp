// Tensor parallelism under mpirun -np 1, 2, 3: the sharded model (kv heads split 3 / 2+1 / 1+1+1)
// gives the same logits and greedy tokens as one process holding the whole model. Rank 0 builds
// that reference itself over a one-rank communicator (MpiCommunicator::self), so each job compares
// against np 1 in the same run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "comm/mpi_communicator.h"
#include "engine/generation/generator.h"
#include "engine/tokenizer/chat_template.h"
#include "support/mpi_test_main.h"
#include "support/test_model.h"

namespace kvshrink {
namespace {

using engine::LogitsFor;
using engine::TokenId;

// f32 sums reordered by the all-reduces; the models keep f32 KV, since rounding K/V to f16 turns
// such reorderings into one-unit flips of some halves (testing::f32_kv_model())
constexpr float kLogitTolerance = 1e-4f;
constexpr int kGreedyTokens = 32;

class TensorParallelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sharded_ = testing::load_test_model(testing::mpi_communicator(), kernels::KvDtype::kF32).release();
    if (testing::mpi_communicator().world().is_coordinator()) {
      self_comm_ = new comm::MpiCommunicator(comm::MpiCommunicator::self());
      reference_ = testing::load_test_model(*self_comm_, kernels::KvDtype::kF32).release();
    }
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete self_comm_;
    delete sharded_;
  }
  static bool coordinator() { return testing::mpi_communicator().world().is_coordinator(); }

  // Rank 0 tokenizes; every rank gets the ids.
  static std::vector<TokenId> prompt() {
    std::vector<TokenId> ids;
    if (coordinator()) {
      ids = sharded_->tokenizer->encode(
          engine::render_chatml({{"user", "Name three rivers in Europe and say where each one flows."}}));
    }
    testing::mpi_communicator().broadcast_vector(ids, 0);
    return ids;
  }

  static inline testing::TestModel* sharded_ = nullptr;
  static inline comm::MpiCommunicator* self_comm_ = nullptr;
  static inline testing::TestModel* reference_ = nullptr;  // rank 0 only
};

TEST_F(TensorParallelTest, RanksOwnWholeKvHeadsSplitUnevenly) {
  const auto& world = testing::mpi_communicator().world();
  const auto& shard = sharded_->model->shard();
  const auto expected = engine::split_range(3, world.size, world.rank);
  EXPECT_EQ(shard.kv_heads.begin, expected.begin);
  EXPECT_EQ(shard.kv_heads.end, expected.end);
  EXPECT_EQ(shard.q_heads.size(), 3 * shard.kv_heads.size());
  if (world.size == 2) {
    EXPECT_EQ(shard.kv_heads.size(), world.rank == 0 ? 2 : 1);
  }
  // Each rank holds only its shard: less than the whole model once there are several ranks.
  std::vector<float> bytes = {static_cast<float>(sharded_->model->weight_bytes())};
  std::vector<float> all(world.size);
  testing::mpi_communicator().all_gather(bytes, all, std::vector<int64_t>(world.size, 1));
  if (coordinator()) {
    const auto full = static_cast<float>(reference_->model->weight_bytes());
    for (int r = 0; world.size > 1 && r < world.size; ++r) {
      EXPECT_LT(all[r], full * 0.75f) << "rank " << r;
    }
    std::printf("weights held per rank (MiB):");
    for (float b : all) std::printf(" %.1f", b / 1048576.0f);
    std::printf("  (whole model %.1f)\n", full / 1048576.0f);
  }
}

TEST_F(TensorParallelTest, PrefillLogitsEqualOneRank) {
  const auto ids = prompt();
  auto kv = sharded_->model->make_kv_store();
  const auto logits = sharded_->model->forward(ids, kv, LogitsFor::kEveryToken);
  if (!coordinator()) return;
  auto reference_kv = reference_->model->make_kv_store();
  const auto expected = reference_->model->forward(ids, reference_kv, LogitsFor::kEveryToken);
  ASSERT_EQ(logits.size(), expected.size());
  const float worst = testing::max_abs_difference(logits, expected);
  std::printf("prefill of %zu tokens: max |logit difference| vs np 1 = %.2e\n", ids.size(), worst);
  EXPECT_LE(worst, kLogitTolerance);
}

TEST_F(TensorParallelTest, GreedyDecodeTokensAndLogitsEqualOneRank) {
  const auto ids = prompt();
  auto kv = sharded_->model->make_kv_store();
  auto logits = sharded_->model->forward(ids, kv, LogitsFor::kLastToken);
  std::unique_ptr<kvstore::KvStore> reference_kv;
  std::vector<float> expected;
  if (coordinator()) {
    reference_kv = std::make_unique<kvstore::KvStore>(reference_->model->make_kv_store());
    expected = reference_->model->forward(ids, *reference_kv, LogitsFor::kLastToken);
  }
  float worst = 0.0f;
  for (int step = 0; step < kGreedyTokens; ++step) {
    const TokenId next = engine::argmax(logits);  // logits are complete and equal on every rank
    if (coordinator()) {
      worst = std::max(worst, testing::max_abs_difference(logits, expected));
      ASSERT_EQ(next, engine::argmax(expected)) << "step " << step;
    }
    const TokenId token[] = {next};
    logits = sharded_->model->forward(token, kv, LogitsFor::kLastToken);
    if (coordinator()) expected = reference_->model->forward(token, *reference_kv, LogitsFor::kLastToken);
  }
  if (coordinator()) {
    std::printf("%d greedy steps: identical tokens, max |logit difference| vs np 1 = %.2e\n", kGreedyTokens,
                worst);
    EXPECT_LE(worst, kLogitTolerance);
  }
}

// The generator's SPMD loop (rank 0 samples and broadcasts) yields the one-rank greedy tokens.
TEST_F(TensorParallelTest, GeneratorMatchesOneRank) {
  auto& comm = testing::mpi_communicator();
  const auto ids = prompt();
  engine::Generator generator(*sharded_->model, *sharded_->tokenizer, comm, 4096);
  const auto result = generator.generate(ids, kGreedyTokens, {}, nullptr);
  if (!coordinator()) return;
  engine::Generator reference(*reference_->model, *reference_->tokenizer, *self_comm_, 4096);
  const auto expected = reference.generate(ids, kGreedyTokens, {}, nullptr);
  EXPECT_EQ(result.tokens, expected.tokens);
  EXPECT_FALSE(result.tokens.empty());
}

}  // namespace
}  // namespace kvshrink
