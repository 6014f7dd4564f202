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
                       int64_t max_batch)
    : config_(LlamaConfig::from_gguf(file)),
      shard_(shard_layout(config_, comm.world().size, comm.world().rank)),
      weights_(LlamaWeights::load(file, config_, shard_)),
      comm_(comm),
      backend_(backend),
      max_batch_(max_batch) {
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
                          options, std::move(pool));
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
  backend_.rope(q_.data(), m, hq, d, positions_.data(), config_.rope_freq_base);
  backend_.rope(k_.data(), m, hkv, d, positions_.data(), config_.rope_freq_base);

  const auto attention_start = std::chrono::steady_clock::now();
  int64_t row0 = 0;
  for (const auto& sequence : batch) {
    const auto n = static_cast<int64_t>(sequence.tokens.size());
    auto& kv = *sequence.kv;
    auto& recent = kv.recent_queries(layer);
    for (int64_t i = std::max<int64_t>(0, n - recent.capacity()); i < n; ++i) {
      recent.push(q_.data() + (row0 + i) * hq * d, positions_[row0 + i]);
    }
    for (int64_t h = 0; h < hkv; ++h) {
      auto& head = kv.head(layer, h);
      for (int64_t i = row0; i < row0 + n; ++i) {
        head.tail().append(k_.data() + (i * hkv + h) * d, v_.data() + (i * hkv + h) * d, positions_[i]);
      }
      attend_head(row0, n, h, head);
    }
    row0 += n;
  }
  attention_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - attention_start).count();
  backend_.matmul(w.wo, attn_out_.data(), partial_.data(), m);
  const auto residual = std::span<float>(partial_.data(), static_cast<size_t>(m * config_.n_embd));
  comm_.all_reduce_sum(residual);
  backend_.add(hidden_.data(), partial_.data(), m * config_.n_embd);
}

void LlamaModel::attend_segment(const kvstore::HeadSegment& segment, kernels::HeadAttention& args) {
  views_.clear();
  segment.block_views(views_);
  args.blocks = views_.data();
  args.n_blocks = static_cast<int64_t>(views_.size());
  backend_.attention(args);
}

// attn_out_ rows row0..row0+m-1 of kv head h's query group = attention over the head's segments
// (full-dimension ones, then low-rank ones), merged with the online-softmax rule. With
// attention-mass tracking, each full-dimension segment's tokens receive probabilities normalised
// over the whole head (a second pass once the total log-denominators are known); low-rank tokens
// receive none.
void LlamaModel::attend_head(int64_t row0, int64_t m, int64_t h, kvstore::HeadCache& head) {
  const int64_t d = config_.head_dim;
  const int64_t hq = shard_.q_heads.size();
  const int64_t group = config_.group_size();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  float* head_out = attn_out_.data() + row0 * hq * d + h * group * d;
  const int32_t* positions = positions_.data() + row0;
  kernels::HeadAttention args{};
  args.q = q_.data() + row0 * hq * d + h * group * d;
  args.q_stride = hq * d;
  args.q_positions = positions;
  args.m = m;
  args.group = group;
  args.head_dim = d;
  args.scale = scale;
  std::vector<const kvstore::HeadSegment*> filled;
  for (const auto& segment : head.segments()) {
    if (segment.tokens() > 0) filled.push_back(&segment);
  }
  const auto low_rank = head.low_rank();
  if (filled.size() == 1 && low_rank.empty()) {
    args.out = head_out;
    args.out_stride = hq * d;
    args.track_mass = filled[0]->tracks_mass();
    attend_segment(*filled[0], args);
    return;
  }
  const auto lse_size = static_cast<size_t>(m * group);
  lse_.resize(lse_size);
  segment_lse_.resize(lse_size);
  segment_out_.resize(lse_size * d);
  // The first part writes attn_out_ and lse_ directly; later ones go to scratch and are merged in.
  bool first = true;
  auto target = [&](float*& out, int64_t& stride, float*& lse) {
    out = first ? head_out : segment_out_.data();
    stride = first ? hq * d : group * d;
    lse = first ? lse_.data() : segment_lse_.data();
  };
  auto merge = [&] {
    if (!first) {
      backend_.merge_attention(head_out, hq * d, lse_.data(), segment_out_.data(), group * d,
                               segment_lse_.data(), m, group, d);
    }
    first = false;
  };
  for (const auto* segment : filled) {
    target(args.out, args.out_stride, args.lse);
    attend_segment(*segment, args);
    merge();
  }
  // The low-rank segments, one kernel call per basis (a head's buckets share one: the query is
  // projected into it and the values back out once per step).
  for (size_t begin = 0; begin < low_rank.size();) {
    const auto& basis = *low_rank[begin].basis;
    buckets_.clear();
    size_t end = begin;
    for (; end < low_rank.size() && low_rank[end].basis.get() == &basis; ++end)
      low_rank[end].block->buckets(buckets_);
    kernels::LowRankAttention low{};
    low.q = args.q;
    low.q_stride = args.q_stride;
    target(low.out, low.out_stride, low.lse);
    low.buckets = buckets_.data();
    low.n_buckets = static_cast<int64_t>(buckets_.size());
    low.q_positions = positions;
    low.key_basis = basis.key.data();
    low.value_basis = basis.value.data();
    low.m = m;
    low.group = group;
    low.head_dim = d;
    low.pre_rope_keys = basis.pre_rope;
    low.rope_base = basis.rope_base;
    low.scale = scale;
    backend_.low_rank_attention(low);
    merge();
    begin = end;
  }
  if (first) {  // nothing held (cannot happen after an append; kept for safety)
    for (int64_t i = 0; i < m; ++i) std::fill_n(head_out + i * hq * d, group * d, 0.0f);
    return;
  }
  if (!head.segments().front().tracks_mass()) return;
  for (const auto* segment : filled) {  // second pass: probabilities over the whole head
    args.out = segment_out_.data();
    args.out_stride = group * d;
    args.lse = nullptr;
    args.lse_reference = lse_.data();
    args.track_mass = true;
    attend_segment(*segment, args);
  }
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
