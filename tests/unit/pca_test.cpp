// Energy-ordered uncentered PCA (engine/compression/pca.h): orthonormal eigenvectors, descending
// eigenvalues, exact reconstruction at full rank, and known small cases; ridge_solve on its normal
// equations.
#include "engine/compression/pca.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace kvshrink::engine {
namespace {

// Samples [n x d] with very different energies per direction: x = sum_k a_k s_k g_k with a fixed
// random rotation g, scales s_k = 2^-k, random a_k, plus a mean offset (uncentered on purpose).
std::vector<float> random_samples(int64_t n, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> rotation(static_cast<size_t>(d * d));
  for (auto& v : rotation) v = normal(rng);
  std::vector<float> x(static_cast<size_t>(n * d), 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t k = 0; k < d; ++k) {
      const float a = normal(rng) * std::ldexp(1.0f, -static_cast<int>(k) / 2);
      for (int64_t i = 0; i < d; ++i)
        x[static_cast<size_t>(t * d + i)] += a * rotation[static_cast<size_t>(k * d + i)];
    }
    x[static_cast<size_t>(t * d)] += 3.0f;
  }
  return x;
}

double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

TEST(Pca, OrthonormalAndDescending) {
  const int64_t n = 500;
  const int64_t d = 16;
  const auto x = random_samples(n, d, 1);
  const Pca p = pca(x, n, d);
  ASSERT_EQ(p.dim, d);
  ASSERT_EQ(p.eigenvalues.size(), static_cast<size_t>(d));
  ASSERT_EQ(p.components.size(), static_cast<size_t>(d * d));
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t b = 0; b < d; ++b) {
      EXPECT_NEAR(dot(p.component(a), p.component(b), d), a == b ? 1.0 : 0.0, 1e-12) << a << " " << b;
    }
  }
  for (int64_t k = 1; k < d; ++k) EXPECT_GE(p.eigenvalues[k - 1], p.eigenvalues[k]);
  EXPECT_GE(p.eigenvalues[d - 1], 0.0);
  // Eigenvalue k = mean squared coefficient along vector k; they add up to the mean energy.
  double energy = 0.0;
  for (float v : x) energy += static_cast<double>(v) * v;
  energy /= static_cast<double>(n);
  double sum = 0.0;
  for (double e : p.eigenvalues) sum += e;
  EXPECT_NEAR(sum, energy, 1e-9 * energy);
  for (int64_t k = 0; k < d; ++k) {
    double mean_square = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      double c = 0.0;
      for (int64_t i = 0; i < d; ++i) c += p.component(k)[i] * x[static_cast<size_t>(t * d + i)];
      mean_square += c * c;
    }
    EXPECT_NEAR(mean_square / static_cast<double>(n), p.eigenvalues[k], 1e-9 * energy) << k;
  }
}

TEST(Pca, FullRankReconstructsExactlyAndTruncationLosesTheTailEnergy) {
  const int64_t n = 300;
  const int64_t d = 12;
  const auto x = random_samples(n, d, 2);
  const Pca p = pca(x, n, d);
  double tail_energy_at_4 = 0.0;  // mean of ||x - P_4 x||^2
  for (int64_t t = 0; t < n; ++t) {
    const float* row = x.data() + t * d;
    std::vector<double> full(static_cast<size_t>(d), 0.0);
    std::vector<double> rank4(static_cast<size_t>(d), 0.0);
    for (int64_t k = 0; k < d; ++k) {
      double c = 0.0;
      for (int64_t i = 0; i < d; ++i) c += p.component(k)[i] * row[i];
      for (int64_t i = 0; i < d; ++i) {
        full[static_cast<size_t>(i)] += c * p.component(k)[i];
        if (k < 4) rank4[static_cast<size_t>(i)] += c * p.component(k)[i];
      }
    }
    for (int64_t i = 0; i < d; ++i) {
      EXPECT_NEAR(full[static_cast<size_t>(i)], row[i], 1e-5 * (1.0 + std::abs(row[i])));
      const double r = row[i] - rank4[static_cast<size_t>(i)];
      tail_energy_at_4 += r * r;
    }
  }
  double tail = 0.0;
  for (int64_t k = 4; k < d; ++k) tail += p.eigenvalues[k];
  EXPECT_NEAR(tail_energy_at_4 / static_cast<double>(n), tail, 1e-6 * (1.0 + tail));
}

// Known 2-D case: samples (3, 3) and (1, -1): C = X^T X / 2 = [[5, 4], [4, 5]], eigenvalues 9 and
// 1 with vectors (1, 1)/sqrt2 and (1, -1)/sqrt2 (sign: largest entry positive, the first on ties).
TEST(Pca, KnownTwoDimensionalCase) {
  const std::vector<float> x = {3, 3, 1, -1};
  const Pca p = pca(x, 2, 2);
  EXPECT_NEAR(p.eigenvalues[0], 9.0, 1e-12);
  EXPECT_NEAR(p.eigenvalues[1], 1.0, 1e-12);
  const double h = std::sqrt(0.5);
  EXPECT_NEAR(p.component(0)[0], h, 1e-12);
  EXPECT_NEAR(p.component(0)[1], h, 1e-12);
  EXPECT_NEAR(p.component(1)[0], h, 1e-12);
  EXPECT_NEAR(p.component(1)[1], -h, 1e-12);
}

// Uncentered: samples along one line away from the origin keep their mean direction first,
// with every sample's energy in it; a centered PCA would pick the spread direction instead.
TEST(Pca, UncenteredKeepsTheMeanDirection) {
  const std::vector<float> x = {10, 1, 10, -1, 10, 1, 10, -1};
  const Pca p = pca(x, 4, 2);
  EXPECT_NEAR(p.eigenvalues[0], 100.0, 1e-9);
  EXPECT_NEAR(p.eigenvalues[1], 1.0, 1e-9);
  EXPECT_NEAR(p.component(0)[0], 1.0, 1e-12);
  EXPECT_NEAR(p.component(0)[1], 0.0, 1e-12);
}

TEST(Pca, AccumulatingInPiecesEqualsAllAtOnce) {
  const int64_t d = 8;
  const auto x = random_samples(100, d, 3);
  SecondMoment pieces(d);
  pieces.add(std::span<const float>(x).first(static_cast<size_t>(30 * d)), 30);
  pieces.add(std::span<const float>(x).subspan(static_cast<size_t>(30 * d)), 70);
  EXPECT_EQ(pieces.count(), 100);
  SecondMoment whole(d);
  whole.add(x, 100);
  const auto a = pieces.matrix();
  const auto b = whole.matrix();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-9 * (1.0 + std::abs(b[i])));
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < d; ++j)
      EXPECT_EQ(a[static_cast<size_t>(i * d + j)], a[static_cast<size_t>(j * d + i)]);
  }
}

TEST(Pca, RankDeficientSamplesGiveZeroEigenvaluesAndStillAnOrthonormalBasis) {
  const std::vector<float> x = {1, 2, 0, 2, 4, 0};  // one direction only
  const Pca p = pca(x, 2, 3);
  EXPECT_NEAR(p.eigenvalues[0], (5.0 + 20.0) / 2.0, 1e-9);
  EXPECT_NEAR(p.eigenvalues[1], 0.0, 1e-9);
  EXPECT_NEAR(p.eigenvalues[2], 0.0, 1e-9);
  for (int64_t a = 0; a < 3; ++a) {
    for (int64_t b = 0; b < 3; ++b)
      EXPECT_NEAR(dot(p.component(a), p.component(b), 3), a == b ? 1.0 : 0.0, 1e-12);
  }
}

TEST(Pca, BadInputThrows) {
  EXPECT_THROW(SecondMoment(0), std::invalid_argument);
  SecondMoment m(3);
  EXPECT_THROW(m.matrix(), std::runtime_error);  // no samples
  const std::vector<float> five(5, 1.0f);
  EXPECT_THROW(m.add(five, 2), std::invalid_argument);
  const std::vector<double> nan_matrix = {1.0, std::nan(""), std::nan(""), 1.0};
  EXPECT_THROW(symmetric_eigen(nan_matrix, 2), std::runtime_error);
  const std::vector<double> three(3, 1.0);
  EXPECT_THROW(symmetric_eigen(three, 2), std::invalid_argument);
}

// Exact data y = X w (no noise) from SecondMoment rows [x, y]: lambda 0 recovers w, and the
// normal equations are the blocks of the moment matrix.
TEST(RidgeSolve, RecoversExactLinearData) {
  const int64_t p = 5;
  const std::vector<double> w = {0.5, -2.0, 1.25, 3.0, -0.75};
  const auto x = random_samples(200, p, 7);
  std::vector<float> rows;
  for (int64_t t = 0; t < 200; ++t) {
    double y = 0.0;
    for (int64_t i = 0; i < p; ++i) {
      rows.push_back(x[static_cast<size_t>(t * p + i)]);
      y += w[static_cast<size_t>(i)] * x[static_cast<size_t>(t * p + i)];
    }
    rows.push_back(static_cast<float>(y));
  }
  SecondMoment moment(p + 1);
  moment.add(rows, 200);
  const auto m = moment.matrix();
  std::vector<double> gram;
  std::vector<double> rhs;
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t j = 0; j < p; ++j) gram.push_back(m[static_cast<size_t>(i * (p + 1) + j)]);
    rhs.push_back(m[static_cast<size_t>(i * (p + 1) + p)]);
  }
  const auto fit = ridge_solve(gram, rhs, p, 0.0);
  ASSERT_EQ(fit.size(), static_cast<size_t>(p));
  // y was rounded to float: the fit is exact to float precision.
  for (int64_t i = 0; i < p; ++i) EXPECT_NEAR(fit[static_cast<size_t>(i)], w[static_cast<size_t>(i)], 1e-4);
}

// Known 2-D case: gram diag(4, 1), rhs (4, 1), lambda 1: w = (4/5, 1/2); only the upper triangle
// is read (garbage below the diagonal is ignored).
TEST(RidgeSolve, KnownCaseAndShrinkage) {
  const std::vector<double> gram = {4.0, 0.0, 99.0, 1.0};
  const std::vector<double> rhs = {4.0, 1.0};
  const auto plain = ridge_solve(gram, rhs, 2, 0.0);
  EXPECT_NEAR(plain[0], 1.0, 1e-12);
  EXPECT_NEAR(plain[1], 1.0, 1e-12);
  const auto ridge = ridge_solve(gram, rhs, 2, 1.0);
  EXPECT_NEAR(ridge[0], 0.8, 1e-12);
  EXPECT_NEAR(ridge[1], 0.5, 1e-12);
}

TEST(RidgeSolve, SingularNeedsLambdaAndBadInputThrows) {
  const std::vector<double> singular = {1.0, 1.0, 1.0, 1.0};
  const std::vector<double> rhs = {1.0, 1.0};
  EXPECT_THROW(ridge_solve(singular, rhs, 2, 0.0), std::runtime_error);
  const auto w = ridge_solve(singular, rhs, 2, 1e-3);
  EXPECT_NEAR(w[0], w[1], 1e-9);
  EXPECT_NEAR(w[0] + w[1], 1.0, 1e-2);
  EXPECT_THROW(ridge_solve(singular, std::vector<double>(3, 1.0), 2, 0.0), std::invalid_argument);
  EXPECT_THROW(ridge_solve(singular, rhs, 2, -1.0), std::invalid_argument);
  const std::vector<double> nan_gram = {std::nan(""), 0.0, 0.0, 1.0};
  EXPECT_THROW(ridge_solve(nan_gram, rhs, 2, 0.0), std::runtime_error);
}

}  // namespace
}  // namespace kvshrink::engine
