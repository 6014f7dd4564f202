#include "engine/model/llama_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "comm/communicator.h"
#include "engine/gguf/gguf_file.h"
#include "kernels/backend.h"
#include "kernels/cpu/dequantize.h"

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
}

kvstore::KvStore LlamaModel::make_kv_store(const kvstore::KvStoreOptions& options,
                                           std::shared_ptr<kvstore::KvMemoryPool> pool) const {
  return kvstore::KvStore(config_.n_layers, shard_.kv_heads.size(), config_.head_dim, shard_.q_heads.size(),
                          options, std::move(pool));
}

std::vector<float> LlamaModel::forward(std::span<const TokenId> tokens, kvstore::KvStore& kv,
                                       LogitsFor which) {
  if (tokens.empty()) throw std::invalid_argument("forward: no tokens");
  for (TokenId id : tokens) {
    if (id < 0 || id >= config_.vocab_size) {
      throw std::invalid_argument(
          fmt::format("token id {} outside the vocabulary [0, {})", id, config_.vocab_size));
    }
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t out_rows = which == LogitsFor::kEveryToken ? n : 1;
  std::vector<float> out(static_cast<size_t>(out_rows * config_.vocab_size));
  for (int64_t begin = 0; begin < n; begin += max_batch_) {
    const int64_t m = std::min(max_batch_, n - begin);
    forward_chunk(tokens.subspan(begin, m), kv);
    // final norm + output projection for the rows whose logits were asked for
    const int64_t first_row = which == LogitsFor::kEveryToken ? 0 : (begin + m == n ? m - 1 : m);
    if (first_row == m) continue;
    const int64_t rows = m - first_row;
    float* rows_hidden = hidden_.data() + first_row * config_.n_embd;
    backend_.rms_norm(rows_hidden, weights_.output_norm.data(), normed_.data(), rows, config_.n_embd,
                      config_.rms_eps);
    const int64_t out_begin = which == LogitsFor::kEveryToken ? begin : 0;
    logits(normed_.data(), rows, out.data() + out_begin * config_.vocab_size);
  }
  return out;
}

// One chunk of m tokens (m <= max_batch) through all layers; leaves the residual stream in hidden_.
void LlamaModel::forward_chunk(std::span<const TokenId> tokens, kvstore::KvStore& kv) {
  const auto m = static_cast<int64_t>(tokens.size());
  const int64_t start = kv.next_position();
  if (start + m > std::numeric_limits<int32_t>::max()) throw std::length_error("forward: position overflow");
  for (int64_t i = 0; i < m; ++i) positions_[i] = static_cast<int32_t>(start + i);
  embed(tokens, hidden_.data());
  for (int64_t layer = 0; layer < config_.n_layers; ++layer) {
    attention_block(layer, m, kv);
    ffn_block(layer, m);
  }
  kv.advance(m);
  kv.account();
}

void LlamaModel::embed(std::span<const TokenId> tokens, float* x) const {
  const auto& table = weights_.token_embedding;
  for (size_t i = 0; i < tokens.size(); ++i) {
    kernels::cpu::dequantize_row(table.dtype(), table.row(tokens[i]), x + i * config_.n_embd, config_.n_embd);
  }
}

// hidden += wo . attention(rope(wq . norm(hidden)), rope(wk . norm(hidden)), wv . norm(hidden))
//   normed [m x n_embd] -> q [m x Hq x d], k, v [m x Hkv x d] (own heads)
//   -> attn_out [m x Hq x d] -> partial [m x n_embd] -> all-reduce -> hidden +=
void LlamaModel::attention_block(int64_t layer, int64_t m, kvstore::KvStore& kv) {
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

  auto& recent = kv.recent_queries(layer);
  for (int64_t i = std::max<int64_t>(0, m - recent.capacity()); i < m; ++i) {
    recent.push(q_.data() + i * hq * d, positions_[i]);
  }
  const auto attention_start = std::chrono::steady_clock::now();
  for (int64_t h = 0; h < hkv; ++h) {
    auto& head = kv.head(layer, h);
    for (int64_t i = 0; i < m; ++i) {
      head.tail().append(k_.data() + (i * hkv + h) * d, v_.data() + (i * hkv + h) * d, positions_[i]);
    }
    attend_head(m, h, head);
  }
  attention_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - attention_start).count();
  backend_.matmul(w.wo, attn_out_.data(), partial_.data(), m);
  const auto residual = std::span<float>(partial_.data(), static_cast<size_t>(m * config_.n_embd));
  comm_.all_reduce_sum(residual);
  backend_.add(hidden_.data(), partial_.data(), m * config_.n_embd);
}

// attn_out_ rows of kv head h's query group = attention over the head's segments (full-dimension
// ones, then low-rank ones), merged with the online-softmax rule. With attention-mass tracking, each
// full-dimension segment's tokens receive probabilities normalised over the whole head (a second
// pass once the total log-denominators are known); low-rank tokens receive none.
void LlamaModel::attend_head(int64_t m, int64_t h, kvstore::HeadCache& head) {
  const int64_t d = config_.head_dim;
  const int64_t hq = shard_.q_heads.size();
  const int64_t group = config_.group_size();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  float* head_out = attn_out_.data() + h * group * d;
  kernels::HeadAttention args{};
  args.q = q_.data() + h * group * d;
  args.q_stride = hq * d;
  args.q_positions = positions_.data();
  args.m = m;
  args.group = group;
  args.head_dim = d;
  args.scale = scale;
  auto point_at = [&](kvstore::HeadSegment& segment) {
    args.keys = segment.keys();
    args.values = segment.values();
    args.kv_positions = segment.positions();
    args.n_kv = segment.tokens();
  };
  std::vector<kvstore::HeadSegment*> filled;
  for (auto& segment : head.segments()) {
    if (segment.tokens() > 0) filled.push_back(&segment);
  }
  const auto low_rank = head.low_rank();
  if (filled.size() == 1 && low_rank.empty()) {
    point_at(*filled[0]);
    args.out = head_out;
    args.out_stride = hq * d;
    args.key_mass = filled[0]->attention_mass();
    backend_.attention(args);
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
      kernels::merge_attention(head_out, hq * d, lse_.data(), segment_out_.data(), group * d,
                               segment_lse_.data(), m, group, d);
    }
    first = false;
  };
  for (auto* segment : filled) {
    point_at(*segment);
    target(args.out, args.out_stride, args.lse);
    backend_.attention(args);
    merge();
  }
  // The low-rank segments, one kernel call per basis (a head's buckets share one: the query is
  // projected into it and the values back out once per step).
  for (size_t begin = 0; begin < low_rank.size();) {
    const auto& basis = *low_rank[begin].basis;
    buckets_.clear();
    size_t end = begin;
    for (; end < low_rank.size() && low_rank[end].basis.get() == &basis; ++end) {
      const auto& block = *low_rank[end].block;
      buckets_.push_back({block.key_coefficients.data(), block.value_coefficients.data(), block.positions.data(),
                          block.tokens(), block.rank});
    }
    kernels::LowRankAttention low{};
    low.q = args.q;
    low.q_stride = args.q_stride;
    target(low.out, low.out_stride, low.lse);
    low.buckets = buckets_.data();
    low.n_buckets = static_cast<int64_t>(buckets_.size());
    low.q_positions = positions_.data();
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
  for (auto* segment : filled) {  // second pass: probabilities over the whole head
    point_at(*segment);
    args.out = segment_out_.data();
    args.out_stride = group * d;
    args.lse = nullptr;
    args.lse_reference = lse_.data();
    args.key_mass = segment->attention_mass();
    backend_.attention(args);
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
