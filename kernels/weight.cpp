#include "kernels/weight.h"

#include <stdexcept>
#include <string>

namespace kvshrink::kernels {

Weight::Weight(int64_t rows, int64_t cols, std::vector<float> values)
    : rows_(rows), cols_(cols), values_(std::move(values)) {
  if (rows < 0 || cols < 0 || static_cast<uint64_t>(rows * cols) != values_.size()) {
    throw std::invalid_argument("Weight: " + std::to_string(values_.size()) + " values do not fill " +
                                std::to_string(rows) + " x " + std::to_string(cols));
  }
}

}  // namespace kvshrink::kernels
