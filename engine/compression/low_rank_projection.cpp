#include "engine/compression/low_rank_projection.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "kernels/backend_factory.h"

namespace kvshrink::engine {

void unrotate_keys(float* keys, const int32_t* positions, int64_t n, int64_t d, float rope_base,
                   kernels::Backend& backend) {
  if (n == 0) return;
  std::vector<int32_t> negated(positions, positions + n);
  for (auto& p : negated) p = -p;
  backend.rope(keys, n, 1, d, negated.data(), rope_base);
}

std::vector<float> keys_in_basis_space(const float* keys, const int32_t* positions, int64_t n,
                                       const kvstore::HeadBasis& basis, kernels::Backend& backend) {
  const int64_t d = basis.head_dim;
  std::vector<float> out(keys, keys + n * d);
  if (basis.pre_rope) unrotate_keys(out.data(), positions, n, d, basis.rope_base, backend);
  return out;
}

std::vector<float> project_rows(const float* rows, int64_t n, std::span<const float> basis, int64_t head_dim,
                                int64_t r, kernels::Backend& backend) {
  std::vector<float> z(static_cast<size_t>(n * r));
  if (n == 0 || r == 0) return z;
  if (basis.size() < static_cast<size_t>(r * head_dim))
    throw std::invalid_argument("project_rows: basis too small");
  backend.matmul_f32(rows, basis.data(), z.data(), n, r, head_dim);
  return z;
}

std::vector<float> relative_errors(const float* rows, int64_t n, int64_t d, std::span<const float> basis,
                                   std::span<const int32_t> ranks, kernels::Backend& backend) {
  const auto z = project_rows(rows, n, basis, d, d, backend);
  std::vector<float> errors(static_cast<size_t>(n) * ranks.size(), 0.0f);
  std::vector<double> tail(static_cast<size_t>(d + 1));
  for (int64_t t = 0; t < n; ++t) {
    const float* c = z.data() + t * d;
    tail[static_cast<size_t>(d)] = 0.0;
    for (int64_t k = d - 1; k >= 0; --k)
      tail[static_cast<size_t>(k)] = tail[static_cast<size_t>(k + 1)] + double{c[k]} * c[k];
    const double norm = tail[0];
    for (size_t i = 0; i < ranks.size(); ++i) {
      const double lost = norm > 0.0 ? tail[static_cast<size_t>(ranks[i])] / norm : 0.0;
      errors[static_cast<size_t>(t) * ranks.size() + i] = static_cast<float>(lost);
    }
  }
  return errors;
}

std::vector<float> relative_errors(const float* rows, int64_t n, int64_t d, std::span<const float> basis,
                                   std::span<const int32_t> ranks) {
  const auto backend = kernels::make_backend("cpu");
  return relative_errors(rows, n, d, basis, ranks, *backend);
}

namespace {

// errors += relative_errors(...)
void add_relative_errors(const float* rows, int64_t n, int64_t d, std::span<const float> basis,
                         std::span<const int32_t> ranks, kernels::Backend& backend,
                         std::vector<float>& errors) {
  const auto more = relative_errors(rows, n, d, basis, ranks, backend);
  for (size_t i = 0; i < more.size(); ++i) errors[i] += more[i];
}

}  // namespace

std::vector<float> reconstruction_errors(const kvstore::HeadCache& head, const kvstore::HeadBasis& basis,
                                         std::span<const int32_t> ranks, kernels::Backend& backend) {
  const int64_t d = basis.head_dim;
  if (basis.latent_dim != d) throw std::invalid_argument("reconstruction_errors: needs a per-head basis");
  for (const int32_t r : ranks) {
    if (r < 0 || r > d)
      throw std::invalid_argument(fmt::format("reconstruction_errors: rank {} outside [0, {}]", r, d));
  }
  std::vector<float> errors(static_cast<size_t>(head.tokens()) * ranks.size(), 0.0f);
  int64_t first = 0;  // token index of the segment's first token
  std::vector<float> segment_errors;
  for (const auto& segment : head.segments()) {
    const int64_t n = segment.tokens();
    if (n == 0) continue;
    segment_errors.assign(static_cast<size_t>(n) * ranks.size(), 0.0f);
    const auto keys =
        keys_in_basis_space(segment.keys().data(), segment.positions().data(), n, basis, backend);
    add_relative_errors(keys.data(), n, d, basis.key, ranks, backend, segment_errors);
    add_relative_errors(segment.values().data(), n, d, basis.value, ranks, backend, segment_errors);
    std::copy(segment_errors.begin(), segment_errors.end(),
              errors.begin() + first * static_cast<int64_t>(ranks.size()));
    first += n;
  }
  return errors;
}

kvstore::HeadCache mixed_dimension_copy(const kvstore::HeadCache& head, std::span<const int32_t> kept,
                                        std::span<const int32_t> ranks,
                                        const std::shared_ptr<const kvstore::HeadBasis>& basis,
                                        kernels::Backend& backend) {
  const int64_t d = head.head_dim();
  if (kept.size() != ranks.size()) {
    throw std::invalid_argument(
        fmt::format("mixed-dimension plan: {} kept tokens but {} ranks", kept.size(), ranks.size()));
  }
  std::vector<int32_t> full;
  std::map<int32_t, std::vector<int32_t>> by_rank;  // rank -> kept token indices, ascending
  for (size_t i = 0; i < kept.size(); ++i) {
    if (ranks[i] < 1)
      throw std::invalid_argument(fmt::format("mixed-dimension plan: rank {} below 1", ranks[i]));
    if (ranks[i] >= d) {
      full.push_back(kept[i]);
    } else {
      by_rank[ranks[i]].push_back(kept[i]);
    }
  }
  if (!by_rank.empty() && (!basis || basis->head_dim != d)) {
    throw std::invalid_argument("mixed-dimension plan: low ranks need a basis of the head's dimension");
  }
  auto out = head.compacted_copy(full);
  for (const auto& [rank, indices] : by_rank) {
    if (rank > basis->latent_dim) throw std::invalid_argument("mixed-dimension plan: rank above the basis");
    const auto part = head.compacted_copy(indices);  // the bucket's tokens, contiguous
    const auto& tokens = part.segments().front();
    const int64_t n = tokens.tokens();
    const auto positions = tokens.positions();
    const auto keys = keys_in_basis_space(tokens.keys().data(), positions.data(), n, *basis, backend);
    const auto key_coefficients = project_rows(keys.data(), n, basis->key, d, rank, backend);
    const auto value_coefficients = project_rows(tokens.values().data(), n, basis->value, d, rank, backend);
    out.add_low_rank({basis, std::make_shared<kvstore::LowRankBlock>(
                                 rank, 1, head.dtype(), key_coefficients.data(), value_coefficients.data(),
                                 positions.data(), n, head.pool())});
  }
  return out;
}

namespace {

// Rows [n x D]: token t's keys (in the basis's key space) or values of every head, concatenated.
// All heads hold the same full-dimension tokens (a joint plan keeps the same tokens in each).
void concatenated_rows(std::span<const kvstore::HeadCache* const> heads, const JointBasis& basis,
                       kernels::Backend& backend, std::vector<float>& keys, std::vector<float>& values) {
  const auto n_heads = static_cast<int64_t>(heads.size());
  const int64_t d = heads[0]->head_dim();
  const int64_t n = heads[0]->tokens();
  keys.assign(static_cast<size_t>(n * basis.dim), 0.0f);
  values.assign(keys.size(), 0.0f);
  for (int64_t h = 0; h < n_heads; ++h) {
    if (heads[h]->tokens() != n)
      throw std::logic_error("joint basis: the heads of a layer hold different tokens");
    int64_t t0 = 0;
    for (const auto& segment : heads[h]->segments()) {
      const auto head_keys = keys_in_basis_space(segment.keys().data(), segment.positions().data(),
                                                 segment.tokens(), *basis.heads[h], backend);
      for (int64_t i = 0; i < segment.tokens(); ++i) {
        std::copy_n(head_keys.data() + i * d, d, keys.data() + (t0 + i) * basis.dim + h * d);
        segment.read_value(i, values.data() + (t0 + i) * basis.dim + h * d);
      }
      t0 += segment.tokens();
    }
  }
}

}  // namespace

std::vector<float> joint_reconstruction_errors(std::span<const kvstore::HeadCache* const> heads,
                                               const JointBasis& basis, std::span<const int32_t> ranks,
                                               kernels::Backend& backend) {
  std::vector<float> keys, values;
  concatenated_rows(heads, basis, backend, keys, values);
  const int64_t n = heads[0]->tokens();
  std::vector<float> errors(static_cast<size_t>(n) * ranks.size(), 0.0f);
  add_relative_errors(keys.data(), n, basis.dim, basis.key, ranks, backend, errors);
  add_relative_errors(values.data(), n, basis.dim, basis.value, ranks, backend, errors);
  return errors;
}

std::vector<kvstore::HeadCache> joint_dimension_copy(std::span<const kvstore::HeadCache* const> heads,
                                                     std::span<const int32_t> kept,
                                                     std::span<const int32_t> ranks, const JointBasis& basis,
                                                     kernels::Backend& backend) {
  if (kept.size() != ranks.size())
    throw std::invalid_argument("joint plan: kept tokens and ranks differ in number");
  const auto n_heads = static_cast<int64_t>(heads.size());
  std::vector<int32_t> full;
  std::map<int32_t, std::vector<int32_t>> by_rank;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (ranks[i] < 1) throw std::invalid_argument(fmt::format("joint plan: rank {} below 1", ranks[i]));
    if (ranks[i] >= basis.dim) {
      full.push_back(kept[i]);
    } else {
      by_rank[ranks[i]].push_back(kept[i]);
    }
  }
  std::vector<kvstore::HeadCache> out;
  for (const auto* head : heads) out.push_back(head->compacted_copy(full));
  for (const auto& [rank, indices] : by_rank) {
    std::vector<kvstore::HeadCache> parts;  // the bucket's tokens of every head, contiguous
    std::vector<const kvstore::HeadCache*> part_pointers;
    for (const auto* head : heads) parts.push_back(head->compacted_copy(indices));
    for (const auto& part : parts) part_pointers.push_back(&part);
    std::vector<float> keys, values;
    concatenated_rows(part_pointers, basis, backend, keys, values);
    const auto n = static_cast<int64_t>(indices.size());
    const auto key_coefficients = project_rows(keys.data(), n, basis.key, basis.dim, rank, backend);
    const auto value_coefficients = project_rows(values.data(), n, basis.value, basis.dim, rank, backend);
    const auto positions = parts[0].segments().front().positions();
    const auto block = std::make_shared<const kvstore::LowRankBlock>(
        rank, n_heads, heads[0]->dtype(), key_coefficients.data(), value_coefficients.data(),
        positions.data(), n, heads[0]->pool());
    for (int64_t h = 0; h < n_heads; ++h) out[static_cast<size_t>(h)].add_low_rank({basis.heads[h], block});
  }
  return out;
}

}  // namespace kvshrink::engine
