#include "kernels/weight.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace kvshrink::kernels {

int64_t packed_row_bytes(TensorType type, int64_t cols) {
  const auto& info = tensor_type_info(type);
  if (cols < 0 || cols % static_cast<int64_t>(info.block_elements) != 0) {
    throw std::invalid_argument("Weight: " + std::to_string(cols) + " columns are not whole " +
                                std::string(info.name) + " blocks");
  }
  return cols / static_cast<int64_t>(info.block_elements) * static_cast<int64_t>(info.block_bytes);
}

Weight Weight::from_f32(int64_t rows, int64_t cols, std::vector<float> values) {
  if (rows < 0 || cols < 0 || static_cast<uint64_t>(rows * cols) != values.size()) {
    throw std::invalid_argument("Weight: " + std::to_string(values.size()) + " values do not fill " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
  Weight w;
  w.dtype_ = TensorType::F32;
  w.rows_ = rows;
  w.cols_ = cols;
  w.row_bytes_ = cols * static_cast<int64_t>(sizeof(float));
  w.data_.resize(values.size() * sizeof(float));
  std::memcpy(w.data_.data(), values.data(), w.data_.size());
  return w;
}

Weight Weight::from_packed(TensorType type, int64_t rows, int64_t cols, std::vector<std::byte> packed) {
  const int64_t row_bytes = packed_row_bytes(type, cols);
  if (rows < 0 || static_cast<uint64_t>(rows * row_bytes) != packed.size()) {
    throw std::invalid_argument("Weight: " + std::to_string(packed.size()) + " bytes do not hold " +
                                std::to_string(rows) + " packed rows of " + std::to_string(cols));
  }
  Weight w;
  w.dtype_ = type;
  w.rows_ = rows;
  w.cols_ = cols;
  w.row_bytes_ = row_bytes;
  w.data_ = std::move(packed);
  return w;
}

}  // namespace kvshrink::kernels
