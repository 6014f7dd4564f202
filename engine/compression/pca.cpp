#include "engine/compression/pca.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>

// LAPACK from OpenBLAS. Debian ships no lapacke.h by default, so the Fortran symbol is declared
// here: column-major, 32-bit integers (libopenblas, not libopenblas64), and the hidden string
// lengths gfortran passes after the arguments.
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
                        double* w, double* work, const int* lwork, int* iwork, const int* liwork, int* info,
                        size_t jobz_length, size_t uplo_length);
// Cholesky solve of a symmetric positive definite system (same conventions).
extern "C" void dposv_(const char* uplo, const int* n, const int* nrhs, double* a, const int* lda, double* b,
                       const int* ldb, int* info, size_t uplo_length);

namespace kvshrink::engine {

SecondMoment::SecondMoment(int64_t dim) : dim_(dim) {
  if (dim <= 0) throw std::invalid_argument("SecondMoment: dimension must be positive");
  sum_.assign(static_cast<size_t>(dim * dim), 0.0);
}

void SecondMoment::add(std::span<const float> rows, int64_t n) {
  if (n < 0 || rows.size() != static_cast<size_t>(n * dim_)) {
    throw std::invalid_argument(
        fmt::format("SecondMoment::add: {} floats are not {} rows of {}", rows.size(), n, dim_));
  }
  if (n == 0) return;
  scratch_.assign(rows.begin(), rows.end());
  // sum (upper, row-major) += X^T X, X [n x dim] row-major.
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(dim_), static_cast<int>(n), 1.0,
              scratch_.data(), static_cast<int>(dim_), 1.0, sum_.data(), static_cast<int>(dim_));
  count_ += n;
}

std::vector<double> SecondMoment::matrix() const {
  if (count_ == 0) throw std::runtime_error("SecondMoment: no samples");
  std::vector<double> c(sum_.size());
  const double inv = 1.0 / static_cast<double>(count_);
  for (int64_t i = 0; i < dim_; ++i) {
    for (int64_t j = i; j < dim_; ++j) {
      const double value = sum_[static_cast<size_t>(i * dim_ + j)] * inv;
      c[static_cast<size_t>(i * dim_ + j)] = value;
      c[static_cast<size_t>(j * dim_ + i)] = value;
    }
  }
  return c;
}

Pca symmetric_eigen(std::span<const double> matrix, int64_t dim) {
  if (dim <= 0 || matrix.size() != static_cast<size_t>(dim * dim)) {
    throw std::invalid_argument(
        fmt::format("symmetric_eigen: {} entries are not a {} x {} matrix", matrix.size(), dim, dim));
  }
  for (double v : matrix) {
    if (!std::isfinite(v)) throw std::runtime_error("symmetric_eigen: the matrix has a non-finite entry");
  }
  // Row-major upper triangle = column-major lower triangle of the same (symmetric) matrix.
  std::vector<double> a(matrix.begin(), matrix.end());
  std::vector<double> w(static_cast<size_t>(dim));
  const int n = static_cast<int>(dim);
  const char jobz = 'V';
  const char uplo = 'L';
  int info = 0;
  int lwork = -1;
  int liwork = -1;
  double work_size = 0.0;
  int iwork_size = 0;
  dsyevd_(&jobz, &uplo, &n, a.data(), &n, w.data(), &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);
  if (info != 0)
    throw std::runtime_error(fmt::format("LAPACK dsyevd workspace query failed (info {})", info));
  lwork = static_cast<int>(work_size);
  liwork = iwork_size;
  std::vector<double> work(static_cast<size_t>(std::max(lwork, 1)));
  std::vector<int> iwork(static_cast<size_t>(std::max(liwork, 1)));
  dsyevd_(&jobz, &uplo, &n, a.data(), &n, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0) {
    throw std::runtime_error(fmt::format("LAPACK dsyevd failed to converge (info {})", info));
  }

  // dsyevd: eigenvalues ascending, eigenvector j in column j of a (column-major: contiguous).
  Pca result;
  result.dim = dim;
  result.eigenvalues.resize(static_cast<size_t>(dim));
  result.components.resize(static_cast<size_t>(dim * dim));
  for (int64_t k = 0; k < dim; ++k) {
    const int64_t from = dim - 1 - k;
    result.eigenvalues[static_cast<size_t>(k)] = std::max(0.0, w[static_cast<size_t>(from)]);
    const double* src = a.data() + from * dim;
    double* dst = result.components.data() + k * dim;
    int64_t largest = 0;
    for (int64_t i = 1; i < dim; ++i) {
      if (std::abs(src[i]) > std::abs(src[largest])) largest = i;
    }
    const double sign = src[largest] < 0 ? -1.0 : 1.0;
    for (int64_t i = 0; i < dim; ++i) dst[i] = sign * src[i];
  }
  return result;
}

Pca pca(std::span<const float> samples, int64_t n, int64_t dim) {
  SecondMoment moment(dim);
  moment.add(samples, n);
  return symmetric_eigen(moment.matrix(), dim);
}

std::vector<double> ridge_solve(std::span<const double> gram, std::span<const double> rhs, int64_t dim,
                                double lambda) {
  if (dim <= 0 || gram.size() != static_cast<size_t>(dim * dim) || rhs.size() != static_cast<size_t>(dim)) {
    throw std::invalid_argument(fmt::format("ridge_solve: {} + {} entries are not a {} x {} system",
                                            gram.size(), rhs.size(), dim, dim));
  }
  if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
    throw std::invalid_argument(fmt::format("ridge_solve: lambda {} is not a finite value >= 0", lambda));
  }
  for (double v : gram) {
    if (!std::isfinite(v)) throw std::runtime_error("ridge_solve: the gram matrix has a non-finite entry");
  }
  for (double v : rhs) {
    if (!std::isfinite(v))
      throw std::runtime_error("ridge_solve: the right-hand side has a non-finite entry");
  }
  // Row-major upper triangle = column-major lower triangle of the same (symmetric) matrix.
  std::vector<double> a(gram.begin(), gram.end());
  for (int64_t i = 0; i < dim; ++i) a[static_cast<size_t>(i * dim + i)] += lambda;
  std::vector<double> w(rhs.begin(), rhs.end());
  const int n = static_cast<int>(dim);
  const int nrhs = 1;
  const char uplo = 'L';
  int info = 0;
  dposv_(&uplo, &n, &nrhs, a.data(), &n, w.data(), &n, &info, 1);
  if (info != 0) {
    throw std::runtime_error(fmt::format(
        "ridge_solve: the {} x {} system is not positive definite (LAPACK dposv info {})", dim, dim, info));
  }
  return w;
}

}  // namespace kvshrink::engine
