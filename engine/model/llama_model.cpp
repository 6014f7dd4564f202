#include "engine/model/llama_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "comm/communicator.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/backend.h"

namespace kvshrink::engine {

LlamaModel::LlamaModel(const GgufFile& file, comm::Communicator& comm, kernels::Backend& backend,
                       int64_t max_batch, kernels::KvDtype kv_dtype)
    : config_(LlamaConfig::from_gguf(file)),
      shard_(shard_layout(config_, comm.world().size, comm.world().rank)),
      weights_(LlamaWeights::load(file, config_, shard_)),
      comm_(comm),
      backend_(backend),
      max_batch_(max_batch),
      kv_dtype_(kv_dtype) {
  const auto m = static_cast<size_t>(max_batch);
  const auto d = static_cast<size_t>(config_.head_dim);
  hidden_.resize(m * config_.n_embd);
  normed_.resize(m * config_.n_embd);
  partial_.resize(m * config_.n_embd);
  q_.resize(m * shard_.q_heads.size() * d);
  attn_out_.resize(q_.size());
  k_.resize(m * shard_.kv_heads.size() * d);
  v_.resize(k_.size());
  gate_.resize(m * shard_.ffn.size());
  up_.resize(gate_.size());
  positions_.resize(m);
  tokens_.resize(m);
}

kvstore::KvStore LlamaModel::make_kv_store(const kvstore::KvStoreOptions& options,
                                           std::shared_ptr<kvstore::KvMemoryPool> pool) const {
  return kvstore::KvStore(config_.n_layers, shard_.kv_heads.size(), config_.head_dim, shard_.q_heads.size(),
                          options, std::move(pool), kv_dtype_);
}

void LlamaModel::check_batch(std::span<const SequenceRows> batch) const {
  int64_t rows = 0;
  for (const auto& sequence : batch) {
    if (sequence.tokens.empty()) throw std::invalid_argument("forward: a sequence without tokens");
    for (TokenId id : sequence.tokens) {
      if (id < 0 || id >= config_.vocab_size) {
        throw std::invalid_argument(
            fmt::format("token id {} outside the vocabulary [0, {})", id, config_.vocab_size));
      }
    }
    if (sequence.kv->next_position() + static_cast<int64_t>(sequence.tokens.size()) >
        std::numeric_limits<int32_t>::max()) {
      throw std::length_error("forward: position overflow");
    }
    rows += static_cast<int64_t>(sequence.tokens.size());
  }
  if (rows == 0 || rows > max_batch_) {
    throw std::invalid_argument(
        fmt::format("forward: a step of {} rows (1 to {} allowed)", rows, max_batch_));
  }
}

// Rows of the step, sequence after sequence: positions_[r], tokens_[r]; the residual stream
// hidden_ [m x n_embd]. Logit rows are normed and projected after the last layer.
std::vector<float> LlamaModel::forward_step(std::span<const SequenceRows> batch) {
  check_batch(batch);
  int64_t m = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      positions_[m + i] = static_cast<int32_t>(sequence.kv->next_position() + i);
      tokens_[m + i] = sequence.tokens[i];
    }
    sequence.kv->record_token_ids(sequence.tokens);
    m += n;
  }
  backend_.embedding_rows(weights_.token_embedding, tokens_.data(), m, hidden_.data());
  for (int64_t layer = 0; layer < config_.n_layers; ++layer) {
    attention_block(layer, batch, m);
    ffn_block(layer, m);
  }
  // Final norm + output projection of the rows whose logits were asked for, gathered into normed_.
  int64_t row0 = 0, out_row = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    const int64_t first = sequence.logits == LogitsFor::kEveryToken ? 0 : n - 1;
    const int64_t count = sequence.logits == LogitsFor::kNone ? 0 : n - first;
    backend_.rms_norm(hidden_.data() + (row0 + first) * config_.n_embd, weights_.output_norm.data(),
                      normed_.data() + out_row * config_.n_embd, count, config_.n_embd, config_.rms_eps);
    out_row += count;
    row0 += n;
    sequence.kv->advance(n);
  }
  std::vector<float> out(static_cast<size_t>(out_row * config_.vocab_size));
  if (out_row > 0) logits(normed_.data(), out_row, out.data());
  return out;
}

std::vector<float> LlamaModel::forward(std::span<const TokenId> tokens, kvstore::KvStore& kv,
                                       LogitsFor which) {
  if (tokens.empty()) throw std::invalid_argument("forward: no tokens");
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t out_rows = which == LogitsFor::kEveryToken ? n : which == LogitsFor::kLastToken;
  std::vector<float> out;
  out.reserve(static_cast<size_t>(out_rows * config_.vocab_size));
  for (int64_t begin = 0; begin < n; begin += max_batch_) {
    const int64_t count = std::min(max_batch_, n - begin);
    const bool last = begin + count == n;
    const SequenceRows rows{&kv, tokens.subspan(begin, count),
                            which == LogitsFor::kEveryToken ? which : (last ? which : LogitsFor::kNone)};
    const auto logits = forward_step({&rows, 1});
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

// hidden += wo . attention(rope(wq . norm(hidden)), rope(wk . norm(hidden)), wv . norm(hidden))
//   normed [m x n_embd] -> q [m x Hq x d], k, v [m x Hkv x d] (own heads, all rows of the step)
//   -> attn_out [m x Hq x d] (per sequence and kv head) -> partial [m x n_embd] -> all-reduce -> hidden +=
void LlamaModel::attention_block(int64_t layer, std::span<const SequenceRows> batch, int64_t m) {
  const auto& w = weights_.layers[static_cast<size_t>(layer)];
  const int64_t d = config_.head_dim;
  const int64_t hq = shard_.q_heads.size();
  const int64_t hkv = shard_.kv_heads.size();
  backend_.rms_norm(hidden_.data(), w.attn_norm.data(), normed_.data(), m, config_.n_embd, config_.rms_eps);
  backend_.matmul(w.wq, normed_.data(), q_.data(), m);
  backend_.matmul(w.wk, normed_.data(), k_.data(), m);
  backend_.matmul(w.wv, normed_.data(), v_.data(), m);
  record_query_statistics(layer, batch);
  backend_.rope(q_.data(), m, hq, d, positions_.data(), config_.rope_freq_base);
  backend_.rope(k_.data(), m, hkv, d, positions_.data(), config_.rope_freq_base);

  const auto attention_start = std::chrono::steady_clock::now();
  append_step_kv(layer, batch);
  plan_attention(layer, batch);
  run_attention_plan();
  attention_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - attention_start).count();
  backend_.matmul(w.wo, attn_out_.data(), partial_.data(), m);
  const auto residual = std::span<float>(partial_.data(), static_cast<size_t>(m * config_.n_embd));
  comm_.all_reduce_sum(residual);
  backend_.add(hidden_.data(), partial_.data(), m * config_.n_embd);
}

// The step's queries, before RoPE, in the running statistics of the stores that keep them.
void LlamaModel::record_query_statistics(int64_t layer, std::span<const SequenceRows> batch) {
  const int64_t row_floats = static_cast<int64_t>(shard_.q_heads.size()) * config_.head_dim;
  int64_t row0 = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    auto& statistics = sequence.kv->query_statistics(layer);
    for (int64_t i = row0; statistics.tracked() && i < row0 + n; ++i) {
      statistics.add(q_.data() + i * row_floats, positions_[i]);
    }
    row0 += n;
  }
}

// The step's rows in each sequence's store: the recent queries (for scoring presses) and every own
// kv head's keys and values, appended to the head's tail segment.
void LlamaModel::append_step_kv(int64_t layer, std::span<const SequenceRows> batch) {
  const int64_t d = config_.head_dim;
  const int64_t hq = shard_.q_heads.size();
  const int64_t hkv = shard_.kv_heads.size();
  int64_t row0 = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    auto& kv = *sequence.kv;
    auto& recent = kv.recent_queries(layer);
    for (int64_t i = std::max<int64_t>(0, n - recent.capacity()); i < n; ++i) {
      recent.push(q_.data() + (row0 + i) * hq * d, positions_[row0 + i]);
    }
    for (int64_t h = 0; h < hkv; ++h) {
      auto& tail = kv.head(layer, h).tail();
      for (int64_t i = row0; i < row0 + n; ++i) {
        tail.append(k_.data() + (i * hkv + h) * d, v_.data() + (i * hkv + h) * d, positions_[i]);
      }
    }
    row0 += n;
  }
}

// Plans the layer's attention calls for every (sequence, own kv head) of the step.
void LlamaModel::plan_attention(int64_t layer, std::span<const SequenceRows> batch) {
  dense_.clear();
  low_rank_.clear();
  merges_.clear();
  mass_.clear();
  views_.reset();
  buckets_.reset();
  parts_.reset();
  int64_t row0 = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    for (int64_t h = 0; h < static_cast<int64_t>(shard_.kv_heads.size()); ++h) {
      plan_head(row0, n, h, sequence.kv->head(layer, h), sequence.kv->options().attention_mass_max);
    }
    row0 += n;
  }
}

// Plans attn_out_ rows row0..row0+m-1 of kv head h's query group: attention over each of the
// head's full-dimension segments, then over its low-rank tokens, merged in that order with the
// online-softmax rule. With attention-mass tracking, each full-dimension segment's tokens receive
// probabilities normalised over the whole head (a second pass once the merged log-denominators are
// known); low-rank tokens receive none. The tail holds the step's tokens, so no head is empty.
void LlamaModel::plan_head(int64_t row0, int64_t m, int64_t h, const kvstore::HeadCache& head,
                           bool mass_max) {
  const int64_t d = config_.head_dim;
  const int64_t hq = shard_.q_heads.size();
  const int64_t group = config_.group_size();
  kernels::HeadAttention args{};
  args.q = q_.data() + row0 * hq * d + h * group * d;
  args.q_stride = hq * d;
  args.q_positions = positions_.data() + row0;
  args.m = m;
  args.group = group;
  args.head_dim = d;
  args.scale = 1.0f / std::sqrt(static_cast<float>(d));
  args.mass_max = mass_max;
  const auto segments = head.segments();
  const auto filled =
      std::count_if(segments.begin(), segments.end(), [](const auto& s) { return s.tokens() > 0; });
  const bool one_part = filled == 1 && head.low_rank().empty();
  HeadParts parts{attn_out_.data() + row0 * hq * d + h * group * d, hq * d,
                  one_part ? nullptr : parts_.next(static_cast<size_t>(m * group)).data(), m};
  for (const auto& segment : segments) {
    if (segment.tokens() == 0) continue;
    next_part(parts, args.out, args.out_stride, args.lse);
    args.track_mass = one_part && segment.tracks_mass();
    plan_segment(segment, args, dense_);
  }
  plan_low_rank(head, args, parts);
  if (one_part || !segments.front().tracks_mass()) return;
  args.out = nullptr;  // second pass: mass only
  args.lse = nullptr;
  args.lse_reference = parts.lse;
  args.track_mass = true;
  for (const auto& segment : segments) {
    if (segment.tokens() > 0) plan_segment(segment, args, mass_);
  }
}

// The low-rank parts of plan_head: one call per basis over its buckets (the query is projected into
// it and the values back out once per step); a head's segments of one basis are adjacent.
void LlamaModel::plan_low_rank(const kvstore::HeadCache& head, const kernels::HeadAttention& args,
                               HeadParts& parts) {
  const auto low_rank = head.low_rank();
  for (size_t begin = 0; begin < low_rank.size();) {
    const auto& basis = *low_rank[begin].basis;
    auto& buckets = buckets_.next();
    size_t end = begin;
    for (; end < low_rank.size() && low_rank[end].basis.get() == &basis; ++end)
      low_rank[end].block->buckets(buckets);
    kernels::LowRankAttention low{};
    low.q = args.q;
    low.q_stride = args.q_stride;
    next_part(parts, low.out, low.out_stride, low.lse);
    low.buckets = buckets.data();
    low.n_buckets = static_cast<int64_t>(buckets.size());
    low.q_positions = args.q_positions;
    low.key_basis = basis.key.data();
    low.value_basis = basis.value.data();
    low.m = args.m;
    low.group = args.group;
    low.head_dim = args.head_dim;
    low.pre_rope_keys = basis.pre_rope;
    low.rope_base = basis.rope_base;
    low.scale = args.scale;
    low_rank_.push_back(low);
    begin = end;
  }
}

// A call of `args` over the segment's blocks.
void LlamaModel::plan_segment(const kvstore::HeadSegment& segment, kernels::HeadAttention args,
                              std::vector<kernels::HeadAttention>& calls) {
  auto& views = views_.next();
  segment.block_views(views);
  args.blocks = views.data();
  args.n_blocks = static_cast<int64_t>(views.size());
  calls.push_back(args);
}

// out/out_stride/lse of the head's next part; a later part's merge into the first is queued.
void LlamaModel::next_part(HeadParts& parts, float*& out, int64_t& out_stride, float*& lse) {
  if (parts.first) {
    out = parts.out;
    out_stride = parts.out_stride;
    lse = parts.lse;
    parts.first = false;
    return;
  }
  const int64_t group = config_.group_size();
  out = parts_.next(static_cast<size_t>(parts.m * group * config_.head_dim)).data();
  out_stride = group * config_.head_dim;
  lse = parts_.next(static_cast<size_t>(parts.m * group)).data();
  merges_.push_back({parts.out, parts.out_stride, parts.lse, out, out_stride, lse, parts.m});
}

// The planned calls: every part (independent, so the backend may run them at once), the merges in
// plan order, then the mass pass, which reads the merged log-denominators.
void LlamaModel::run_attention_plan() {
  backend_.attention(dense_);
  backend_.low_rank_attention(low_rank_);
  for (const auto& p : merges_) {
    backend_.merge_attention(p.out, p.out_stride, p.lse, p.out_b, p.out_b_stride, p.lse_b, p.m,
                             config_.group_size(), config_.head_dim);
  }
  backend_.attention(mass_);
}

// hidden += w_down . (silu(w_gate . norm(hidden)) * (w_up . norm(hidden)))
//   normed [m x n_embd] -> gate, up [m x own ffn] -> partial [m x n_embd] -> all-reduce -> hidden +=
void LlamaModel::ffn_block(int64_t layer, int64_t m) {
  const auto& w = weights_.layers[static_cast<size_t>(layer)];
  backend_.rms_norm(hidden_.data(), w.ffn_norm.data(), normed_.data(), m, config_.n_embd, config_.rms_eps);
  backend_.matmul(w.w_gate, normed_.data(), gate_.data(), m);
  backend_.matmul(w.w_up, normed_.data(), up_.data(), m);
  backend_.silu_mul(gate_.data(), up_.data(), m * shard_.ffn.size());
  backend_.matmul(w.w_down, gate_.data(), partial_.data(), m);
  const auto residual = std::span<float>(partial_.data(), static_cast<size_t>(m * config_.n_embd));
  comm_.all_reduce_sum(residual);
  backend_.add(hidden_.data(), partial_.data(), m * config_.n_embd);
}

// out[rows x vocab] = normed rows . output^T, each rank computing its vocab range, then gathered.
void LlamaModel::logits(const float* normed_rows, int64_t rows, float* out) {
  const int64_t vocab = config_.vocab_size;
  const int tp = comm_.world().size;
  if (tp == 1) {
    backend_.matmul(weights_.output, normed_rows, out, rows);
    return;
  }
  std::vector<float> local(static_cast<size_t>(rows * shard_.vocab.size()));
  backend_.matmul(weights_.output, normed_rows, local.data(), rows);
  std::vector<int64_t> counts(tp);
  for (int r = 0; r < tp; ++r) counts[r] = rows * split_range(vocab, tp, r).size();
  std::vector<float> gathered(static_cast<size_t>(rows * vocab));  // rank-major blocks [rows x vocab_r]
  comm_.all_gather(local, gathered, counts);
  int64_t block_offset = 0;
  for (int r = 0; r < tp; ++r) {
    const auto range = split_range(vocab, tp, r);
    for (int64_t i = 0; i < rows; ++i) {
      std::copy_n(gathered.data() + block_offset + i * range.size(), range.size(),
                  out + i * vocab + range.begin);
    }
    block_offset += rows * range.size();
  }
}

}  // namespace kvshrink::engine
