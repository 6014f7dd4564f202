// Energy-ordered PCA of sample vectors, the basis of dimension-level KV compression
// (shared/research/kv-methods.md §8-9): the eigenvectors of the *uncentered* second-moment matrix
// C = X^T X / n of samples X [n x d]. Uncentered, because attention uses raw dot products q.k and a
// token truncated to rank r is reconstructed as the raw vector P_r x = U_r U_r^T x; the mean is
// part of what must be kept. Eigenvalue k is the mean squared coefficient of the samples along
// direction k, so sum_{k >= r} lambda_k / sum_k lambda_k is the share of the samples' energy lost
// at rank r.
//
// The eigendecomposition is LAPACK's dsyevd (double precision) from OpenBLAS; ridge_solve (the
// least-squares fits that share SecondMoment's normal equations) is LAPACK's dposv.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvshrink::engine {

struct Pca {
  int64_t dim = 0;
  // [dim], descending, >= 0 (rounding below zero is clamped to 0).
  std::vector<double> eigenvalues;
  // [dim x dim]: eigenvector k (unit length) is components[k * dim, (k + 1) * dim), i.e. the matrix
  // U with eigenvectors as columns, stored column-major. Sign: each vector's entry of largest
  // magnitude is positive (the first such entry on ties), so the result is deterministic.
  std::vector<double> components;

  const double* component(int64_t k) const { return components.data() + k * dim; }
};

// Accumulates C = sum of x x^T over sample rows in double precision; the samples are not kept.
class SecondMoment {
 public:
  explicit SecondMoment(int64_t dim);

  // Adds n rows of `rows` [n x dim], row-major floats.
  void add(std::span<const float> rows, int64_t n);
  int64_t count() const { return count_; }
  int64_t dim() const { return dim_; }
  // C = X^T X / n, [dim x dim] symmetric, row-major. Throws when no sample was added.
  std::vector<double> matrix() const;

 private:
  int64_t dim_;
  int64_t count_ = 0;
  std::vector<double> sum_;      // upper triangle of X^T X (row-major), lower part unused
  std::vector<double> scratch_;  // rows converted to double
};

// Eigendecomposition of a symmetric matrix [dim x dim] (row-major; both triangles must agree, only
// the upper one is read), eigenvalues descending. Throws std::runtime_error if LAPACK fails or an
// entry is not finite.
Pca symmetric_eigen(std::span<const double> matrix, int64_t dim);

// PCA of samples [n x dim] (row-major): symmetric_eigen(X^T X / n).
Pca pca(std::span<const float> samples, int64_t n, int64_t dim);

// Ridge regression from its normal equations: w [dim] solving (gram + lambda I) w = rhs, where gram
// [dim x dim] is symmetric positive semi-definite (row-major; only the upper triangle is read), e.g.
// X^T X / n, and rhs [dim] is X^T y / n. lambda >= 0 (lambda > 0 makes a singular gram solvable).
// Throws std::invalid_argument on bad sizes or lambda, std::runtime_error if an entry is not finite
// or gram + lambda I is not positive definite.
std::vector<double> ridge_solve(std::span<const double> gram, std::span<const double> rhs, int64_t dim,
                                double lambda);

}  // namespace kvshrink::engine
