// A weight matrix as the compute backends see it: [rows = output features, cols = input features],
// row-major (each output row contiguous), i.e. the GGUF/HF [out, in] layout. Its rows are stored
// either as float32 or in their GGML packing (e.g. Q4_1: cols/32 blocks of 20 bytes per row), as
// loaded from the GGUF; the backend picks its kernels by dtype().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels {

class Weight {
 public:
  Weight() = default;
  // values: rows x cols float32.
  static Weight from_f32(int64_t rows, int64_t cols, std::vector<float> values);
  // packed: rows x row_bytes, row_bytes = cols / block_elements * block_bytes of `type`.
  static Weight from_packed(TensorType type, int64_t rows, int64_t cols, std::vector<std::byte> packed);

  TensorType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t row_bytes() const { return row_bytes_; }
  // Float32 rows; only for dtype() == F32.
  const float* f32() const { return reinterpret_cast<const float*>(data_.data()); }
  const std::byte* row(int64_t r) const { return data_.data() + r * row_bytes_; }
  uint64_t bytes() const { return data_.size(); }
  // The copy a backend keeps in its own memory (the CUDA backend's device copy), made at its first
  // use of this weight and freed with it; copies of the Weight share it (their bytes are the same).
  std::shared_ptr<void>& backend_copy() const { return backend_copy_; }

 private:
  TensorType dtype_ = TensorType::F32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int64_t row_bytes_ = 0;
  std::vector<std::byte> data_;  // rows_ x row_bytes_
  mutable std::shared_ptr<void> backend_copy_;
};

// Bytes of one packed row of `cols` elements; throws std::invalid_argument if cols is not a whole
// number of blocks.
int64_t packed_row_bytes(TensorType type, int64_t cols);

}  // namespace kvshrink::kernels
