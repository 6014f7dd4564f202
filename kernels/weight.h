// A weight matrix as the compute backends see it: [rows = output features, cols = input features],
// row-major (each output row contiguous), i.e. the GGUF/HF [out, in] layout. It knows its dtype so
// that quantized storage (planned for fast decode GEMV) can sit behind the same type; today every
// weight is dequantized to f32 at load.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/tensor_type.h"

namespace kvshrink::kernels {

class Weight {
 public:
  Weight() = default;
  Weight(int64_t rows, int64_t cols, std::vector<float> values);

  TensorType dtype() const { return TensorType::F32; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const float* f32() const { return values_.data(); }
  uint64_t bytes() const { return values_.size() * sizeof(float); }

 private:
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  std::vector<float> values_;  // rows_ x cols_
};

}  // namespace kvshrink::kernels
