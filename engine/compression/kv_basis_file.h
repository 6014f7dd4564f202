// Calibrated per-(layer, kv head) orthonormal bases for keys and values, the substrate of
// dimension-level KV compression (issue 5; shared/research/kv-methods.md §8-9), as a GGUF side
// file next to the model, written by `kvshrink calibrate`.
//
// Keys: general.type = "kvshrink.kv_basis", kvshrink.kv_basis.model (model_identity() of the model
// it was made for), .key_space ("post-rope" | "pre-rope"), .tokens (calibration tokens), .chunk
// (tokens per prefill), .offsets (INT32 array: the first positions the calibration chunks were
// placed at, in turn; absent = [0]), .text (what was read).
// Tensors, F32, dims innermost first (d = head_dim, H = n_kv_heads, L = n_layers):
//   key_basis, value_basis   [d, d, H, L]: for (layer, head), d basis vectors of d components each;
//                            vector k is contiguous (= the basis matrix U with the vectors as
//                            columns, column-major); orthonormal; energy-ordered (k = 0 first)
//   key_energy, value_energy [d, H, L]: eigenvalue k of the uncentered second moment E[x x^T]
//                            (mean squared coefficient along vector k), descending, >= 0
//   importance_weights       [2d + 1, H, L]: for (layer, head), the query-agnostic token-importance
//                            predictor w (predict_importance): log-importance ~ w . [pre-RoPE key,
//                            value, 1]
//   joint_key_basis, joint_value_basis [D, D, L] (D = H * d): for each layer, the energy-ordered
//                            uncentered PCA of the keys (values) of all its kv heads concatenated
//                            (head 0's d components first), as key_basis but D x D per layer
//   joint_key_energy, joint_value_energy [D, L]: their eigenvalues, descending, >= 0
//
// A key in a post-rope basis is the key as the store holds it (RoPE applied at its position); in a
// pre-rope basis it is the key before RoPE (rotate the stored key by -theta to get it). The joint
// key basis is in the same key space; the importance predictor always reads pre-RoPE keys.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "engine/model/llama_config.h"

namespace kvshrink::engine {

enum class KeySpace { kPostRope, kPreRope };

const char* key_space_name(KeySpace space);  // "post-rope" | "pre-rope"
// Throws std::invalid_argument for any other name.
KeySpace parse_key_space(const std::string& name);

struct KvBasis {
  std::string model;  // model_identity() of the model it was made for
  KeySpace key_space = KeySpace::kPostRope;
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t tokens = 0;  // calibration tokens
  int64_t chunk = 0;   // tokens per calibration prefill
  // First positions of the calibration chunks, used in turn (a chunk covers offset..offset+chunk-1).
  std::vector<int32_t> offsets = {0};
  std::string text;  // what the calibration read (file names)
  // [n_layers][n_kv_heads][head_dim vectors][head_dim components]
  std::vector<float> key_basis;
  std::vector<float> value_basis;
  // [n_layers][n_kv_heads][head_dim], descending per (layer, head)
  std::vector<float> key_energy;
  std::vector<float> value_energy;
  // [n_layers][n_kv_heads][2 * head_dim + 1]: predict_importance weights per (layer, head)
  std::vector<float> importance;
  int64_t joint_dim = 0;  // D = n_kv_heads * head_dim
  // [n_layers][D vectors][D components]
  std::vector<float> joint_key_basis;
  std::vector<float> joint_value_basis;
  // [n_layers][D], descending per layer
  std::vector<float> joint_key_energy;
  std::vector<float> joint_value_energy;

  int64_t heads() const { return n_layers * n_kv_heads; }
  int64_t importance_features() const { return 2 * head_dim + 1; }
  // The d x d basis of (layer, kv head): vector k at [k * head_dim, (k + 1) * head_dim).
  std::span<const float> key(int64_t layer, int64_t head) const;
  std::span<const float> value(int64_t layer, int64_t head) const;
  std::span<const float> key_energies(int64_t layer, int64_t head) const;
  std::span<const float> value_energies(int64_t layer, int64_t head) const;
  // The 2 * head_dim + 1 predict_importance weights of (layer, kv head).
  std::span<const float> importance_weights(int64_t layer, int64_t head) const;
  // The D x D joint basis of a layer: vector k at [k * D, (k + 1) * D).
  std::span<const float> joint_key(int64_t layer) const;
  std::span<const float> joint_value(int64_t layer) const;
};

// Query-agnostic predicted log-importance of one token of a kv head, from the head's weights w
// [2 * head_dim + 1] (KvBasis::importance_weights): w[0, d) . pre_rope_key + w[d, 2d) . value +
// w[2d]. It estimates log(mean attention probability the token receives per query that sees it +
// 1e-6), the probability averaged over the head's query group; only the order between tokens of a
// head matters for ranking. Throws std::invalid_argument when weights.size() != 2 * head_dim + 1.
float predict_importance(std::span<const float> weights, const float* pre_rope_key, const float* value,
                         int64_t head_dim);

// `<model without .gguf>.kvbasis.gguf`
std::filesystem::path default_kv_basis_path(const std::filesystem::path& model);

// Throws std::invalid_argument when the basis's arrays do not match its shape (every array, the
// importance and joint ones included; joint_dim must be n_kv_heads * head_dim).
void write_kv_basis(const std::filesystem::path& path, const KvBasis& basis);
// Throws std::runtime_error naming the file when it is not a kv basis file, a shape or count is
// wrong, a value is not finite, an energy is negative or out of order, or a basis (per head or
// joint) is not orthonormal.
KvBasis read_kv_basis(const std::filesystem::path& path);
// Throws std::runtime_error when the basis was made for another model (identity, layer count, kv
// heads or head dimension differ).
void check_kv_basis_fits(const KvBasis& basis, const std::string& identity, const LlamaConfig& config,
                         const std::filesystem::path& path);

}  // namespace kvshrink::engine
