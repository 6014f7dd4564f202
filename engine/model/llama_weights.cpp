#include "engine/model/llama_weights.h"

#include <fmt/format.h>

#include <cstring>

#include "engine/gguf/gguf_file.h"
#include "kernels/tensor_type.h"

namespace kvshrink::engine {
namespace {

using kernels::Weight;

const GgufTensorInfo& tensor_with_shape(const GgufFile& file, const std::string& name, int64_t cols,
                                        int64_t rows) {
  const auto& tensor = file.get_tensor(name);
  const bool matrix = rows > 1;
  const bool shape_ok =
      tensor.dims[0] == static_cast<uint64_t>(cols) &&
      tensor.n_elements == static_cast<uint64_t>(cols * rows) &&
      (!matrix || (tensor.dims.size() >= 2 && tensor.dims[1] == static_cast<uint64_t>(rows)));
  if (!shape_ok) {
    throw GgufError(fmt::format("{}: tensor '{}' has shape {} but the model needs [{} x {}]",
                                file.path().string(), name, fmt::join(tensor.dims, " x "), cols, rows));
  }
  return tensor;
}

// Rows [range.begin, range.end) of a [rows x cols] tensor, kept in the file's packing.
Weight load_rows(const GgufFile& file, const std::string& name, int64_t cols, int64_t rows,
                 IndexRange range) {
  const auto& tensor = tensor_with_shape(file, name, cols, rows);
  const auto data = file.tensor_data(tensor);
  const int64_t row_bytes = kernels::packed_row_bytes(tensor.type, cols);
  const auto first = data.begin() + range.begin * row_bytes;
  return Weight::from_packed(tensor.type, range.size(), cols,
                             std::vector<std::byte>(first, first + range.size() * row_bytes));
}

// Columns [range.begin, range.end) of every row of a [rows x cols] tensor: packed when the range
// falls on block boundaries (the usual case: whole heads, FFN splits of 32s), else as f32.
Weight load_columns(const GgufFile& file, const std::string& name, int64_t cols, int64_t rows,
                    IndexRange range) {
  const auto& tensor = tensor_with_shape(file, name, cols, rows);
  const auto data = file.tensor_data(tensor);
  const auto& info = kernels::tensor_type_info(tensor.type);
  const int64_t row_bytes = kernels::packed_row_bytes(tensor.type, cols);
  const auto block = static_cast<int64_t>(info.block_elements);
  if (range.begin % block == 0 && range.end % block == 0) {
    const int64_t slice_offset = range.begin / block * static_cast<int64_t>(info.block_bytes);
    const int64_t slice_bytes = kernels::packed_row_bytes(tensor.type, range.size());
    std::vector<std::byte> packed(static_cast<size_t>(rows * slice_bytes));
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(packed.data() + r * slice_bytes, data.data() + r * row_bytes + slice_offset, slice_bytes);
    }
    return Weight::from_packed(tensor.type, rows, range.size(), std::move(packed));
  }
  std::vector<float> full_row(static_cast<size_t>(cols));
  std::vector<float> values(static_cast<size_t>(rows * range.size()));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::dequantize_row_to_f32(tensor.type, data.data() + r * row_bytes, full_row.data(), cols);
    std::memcpy(values.data() + r * range.size(), full_row.data() + range.begin,
                range.size() * sizeof(float));
  }
  return Weight::from_f32(rows, range.size(), std::move(values));
}

std::vector<float> load_vector(const GgufFile& file, const std::string& name, int64_t n) {
  const auto& tensor = tensor_with_shape(file, name, n, 1);
  std::vector<float> values(static_cast<size_t>(n));
  kernels::dequantize_row_to_f32(tensor.type, file.tensor_data(tensor).data(), values.data(), n);
  return values;
}

}  // namespace

uint64_t LlamaWeights::bytes() const {
  uint64_t total = token_embedding.bytes() + (output_norm.size() * sizeof(float)) + output.bytes();
  for (const auto& layer : layers) {
    total += (layer.attn_norm.size() + layer.ffn_norm.size()) * sizeof(float);
    for (const Weight* w :
         {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w_gate, &layer.w_up, &layer.w_down}) {
      total += w->bytes();
    }
  }
  return total;
}

LlamaWeights LlamaWeights::load(const GgufFile& file, const LlamaConfig& c, const ShardLayout& shard) {
  LlamaWeights weights;
  const int64_t d = c.head_dim;
  const IndexRange q_rows{shard.q_heads.begin * d, shard.q_heads.end * d};
  const IndexRange kv_rows{shard.kv_heads.begin * d, shard.kv_heads.end * d};

  weights.token_embedding = load_rows(file, "token_embd.weight", c.n_embd, c.vocab_size, {0, c.vocab_size});

  weights.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto& layer = weights.layers[static_cast<size_t>(l)];
    const auto name = [l](const char* suffix) { return fmt::format("blk.{}.{}.weight", l, suffix); };
    layer.attn_norm = load_vector(file, name("attn_norm"), c.n_embd);
    layer.ffn_norm = load_vector(file, name("ffn_norm"), c.n_embd);
    layer.wq = load_rows(file, name("attn_q"), c.n_embd, c.n_head * d, q_rows);
    layer.wk = load_rows(file, name("attn_k"), c.n_embd, c.n_head_kv * d, kv_rows);
    layer.wv = load_rows(file, name("attn_v"), c.n_embd, c.n_head_kv * d, kv_rows);
    layer.wo = load_columns(file, name("attn_output"), c.n_head * d, c.n_embd, q_rows);
    layer.w_gate = load_rows(file, name("ffn_gate"), c.n_embd, c.n_ff, shard.ffn);
    layer.w_up = load_rows(file, name("ffn_up"), c.n_embd, c.n_ff, shard.ffn);
    layer.w_down = load_columns(file, name("ffn_down"), c.n_ff, c.n_embd, shard.ffn);
  }
  weights.output_norm = load_vector(file, "output_norm.weight", c.n_embd);
  const char* output_name = file.find_tensor("output.weight") ? "output.weight" : "token_embd.weight";
  weights.output = load_rows(file, output_name, c.n_embd, c.vocab_size, shard.vocab);
  return weights;
}

}  // namespace kvshrink::engine
