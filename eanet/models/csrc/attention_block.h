// One block of attention rows, normalised and dropped out in cache: the element-wise part of
// fused_attention.cc, between its matmuls. Each function is a step of the formulas in
// eanet/models/kernels.py's docstrings, term for term.
//
// A block is `rows` rows of N scores (EANet: the S memory slots of one (image, head) pair;
// self-attention: any `rows` rows, each normalised on its own). With p the softmax of each row
// over N and, when normalize_columns, q = p / (epsilon + the block's column sums of p), else
// q = p:
//   forward   m = keep ? q : 0
//   backward  from dm (the gradient at m): t = dm * m,
//             u = t - q * colsum(t) (normalize_columns; else u = t),
//             ds = u - p * rowsum(u)   (the gradient at the scores)
#ifndef EANET_ATTENTION_BLOCK_H_
#define EANET_ATTENTION_BLOCK_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "Eigen/Core"

namespace eanet {

// Scratch buffers aligned as TensorFlow's tensors are (64 bytes), so Eigen's vectorised sums
// split every row the same way on every call: the results are deterministic to the last bit.
using Scratch = std::vector<float, Eigen::aligned_allocator<float>>;
using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

struct BlockNorm {
  int64_t rows = 1, n = 0;
  bool normalize_columns = false;
  float epsilon = 0.0f;

  // p (the softmax of each row of s) into `p`, and into `rcs` (N floats) the reciprocal of
  // (epsilon + the block's column sums of p) when normalize_columns, so that q = p * rcs.
  // With n == 0 (no patches or no keys) there is nothing to normalise: the softmax over an
  // empty axis has no entries (and Eigen's maxCoeff of an empty row is undefined).
  void Normalize(const float* s, float* p, float* rcs) const {
    if (n == 0) return;
    for (int64_t i = 0; i < rows; ++i) {
      ConstRow in(s + i * n, n);
      Row out(p + i * n, n);
      out = (in - in.maxCoeff()).exp();
      out *= 1.0f / out.sum();
    }
    if (!normalize_columns) return;
    Row cs(rcs, n);
    cs.setConstant(epsilon);
    for (int64_t i = 0; i < rows; ++i) cs += Row(p + i * n, n);
    cs = cs.inverse();
  }

  // m = keep ? q : 0 for one row (p, keep and m point at that row; keep may be nullptr; m may
  // be p).
  void MaskedRow(const float* p, const float* rcs, const uint8_t* keep, float* m) const {
    if (normalize_columns) {
      if (keep) {
        for (int64_t j = 0; j < n; ++j) m[j] = p[j] * rcs[j] * static_cast<float>(keep[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) m[j] = p[j] * rcs[j];
      }
    } else if (keep) {
      for (int64_t j = 0; j < n; ++j) m[j] = p[j] * static_cast<float>(keep[j]);
    } else if (m != p) {
      std::copy(p, p + n, m);
    }
  }

  // m for the whole block (keep: the block's mask or nullptr).
  void Masked(const float* p, const float* rcs, const uint8_t* keep, float* m) const {
    for (int64_t i = 0; i < rows; ++i) {
      MaskedRow(p + i * n, rcs, keep ? keep + i * n : nullptr, m + i * n);
    }
  }

  // ds from dm for the whole block, given p, rcs and m of the forward pass; `ds` may be `dm`.
  // `colsum` is N floats of scratch.
  void ScoreGradient(const float* p, const float* rcs, const float* m, const float* dm,
                     float* ds, float* colsum) const {
    Row c(colsum, n);
    if (normalize_columns) c.setZero();
    for (int64_t i = 0; i < rows; ++i) {  // t = dm * m, colsum(t)
      Row t(ds + i * n, n);
      t = ConstRow(dm + i * n, n) * ConstRow(m + i * n, n);
      if (normalize_columns) c += t;
    }
    for (int64_t i = 0; i < rows; ++i) {
      Row u(ds + i * n, n);
      ConstRow pi(p + i * n, n);
      if (normalize_columns) u -= pi * ConstRow(rcs, n) * c;  // u = t - q * colsum(t)
      u -= pi * u.sum();  // ds = u - p * rowsum(u)
    }
  }
};

}  // namespace eanet

#endif  // EANET_ATTENTION_BLOCK_H_
