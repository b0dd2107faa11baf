// Fused CPU kernels for eanet's attention: the softmax (EANet: plus the L1 step over the memory
// slots), the dropout keep-mask, and their gradient, one pass over each block of rows in cache
// instead of one TensorFlow op (one pass over memory) per arithmetic step.
//
// scores (..., N) float32 is viewed as blocks of `rows_per_block` rows of N entries (EANet: the S
// memory slots of one (batch, head) pair; self-attention: one row). Per block, with p the softmax
// of each row over N, and (normalize_columns) q = p / (epsilon + sum over the block's rows of p),
// else q = p:
//   EanetNormalizedDropout      m = keep ? q : 0
//   EanetNormalizedDropoutGrad  m as above, and from dm (the gradient at m):
//                               t = dm * m,  u = t - q * colsum(t) (normalize_columns; else u = t),
//                               ds = u - p * rowsum(u)   (the gradient at the scores)
// which is eanet/models/kernels.py's op-by-op computation, term for term. eanet.models.native
// compiles this file against the installed TensorFlow on first use.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

using namespace tensorflow;  // NOLINT

namespace {

// Scratch buffers aligned as TensorFlow's tensors are (64 bytes), so Eigen's vectorised sums
// split every row the same way on every call: the results are deterministic to the last bit.
using Scratch = std::vector<float, Eigen::aligned_allocator<float>>;
using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;

Status SameShapeAsScores(shape_inference::InferenceContext* c) {
  c->set_output(0, c->input(0));
  if (c->num_outputs() > 1) c->set_output(1, c->input(0));
  return OkStatus();
}

struct Layout {
  int64_t n = 0, blocks = 0;  // entries per row; blocks of rows_per_block rows
};

class NormalizedDropoutBase : public OpKernel {
 public:
  explicit NormalizedDropoutBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rows_per_block", &rows_per_block_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalize_columns", &normalize_columns_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_keep", &use_keep_));
    OP_REQUIRES(ctx, rows_per_block_ > 0, errors::InvalidArgument("rows_per_block must be > 0"));
  }

 protected:
  // The layout of `scores` into `l`, or an error status on `ctx`.
  void Check(OpKernelContext* ctx, const Tensor& scores, const Tensor& keep, Layout& l) {
    OP_REQUIRES(ctx, scores.dims() >= 1, errors::InvalidArgument("scores must have an axis"));
    l.n = scores.dim_size(scores.dims() - 1);
    const int64_t rows = l.n ? scores.NumElements() / l.n : 0;
    OP_REQUIRES(ctx, rows % rows_per_block_ == 0,
                errors::InvalidArgument("rows (", rows, ") not divisible by rows_per_block (",
                                        rows_per_block_, ")"));
    l.blocks = rows / rows_per_block_;
    if (use_keep_) {
      OP_REQUIRES(ctx, keep.shape() == scores.shape(),
                  errors::InvalidArgument("keep must have the scores' shape"));
    }
  }

  // For one block starting at `s`: p (the softmax of each row) into `p`, and into `rcs` the
  // reciprocal of (epsilon + the block's column sums of p) when normalize_columns, so that
  // q = p * rcs; `rcs` has N floats.
  void Normalize(const float* s, int64_t n, float* p, float* rcs) const {
    const int64_t r = rows_per_block_;
    for (int64_t i = 0; i < r; ++i) {
      ConstRow in(s + i * n, n);
      Row out(p + i * n, n);
      out = (in - in.maxCoeff()).exp();
      out *= 1.0f / out.sum();
    }
    if (!normalize_columns_) return;
    Row cs(rcs, n);
    cs.setConstant(epsilon_);
    for (int64_t i = 0; i < r; ++i) cs += Row(p + i * n, n);
    cs = cs.inverse();
  }

  // m = keep ? q : 0 for row i of a block (q = p * rcs, or p).
  void MaskedRow(const float* p, const float* rcs, const uint8_t* keep, int64_t n,
                 float* m) const {
    if (normalize_columns_) {
      if (keep) {
        for (int64_t j = 0; j < n; ++j) m[j] = p[j] * rcs[j] * static_cast<float>(keep[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) m[j] = p[j] * rcs[j];
      }
    } else if (keep) {
      for (int64_t j = 0; j < n; ++j) m[j] = p[j] * static_cast<float>(keep[j]);
    } else {
      std::copy(p, p + n, m);
    }
  }

  // The keep-mask as bytes (one bool each), or nullptr without dropout.
  const uint8_t* KeepMask(const Tensor& keep) const {
    return use_keep_ ? reinterpret_cast<const uint8_t*>(keep.flat<bool>().data()) : nullptr;
  }

  void Shard(OpKernelContext* ctx, const Layout& l, int64_t cost_per_block,
             const std::function<void(int64_t, int64_t)>& work) const {
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(l.blocks, cost_per_block, work);
  }

  int rows_per_block_ = 1;
  bool normalize_columns_ = false;
  float epsilon_ = 0.0f;
  bool use_keep_ = false;
};

class NormalizedDropoutOp : public NormalizedDropoutBase {
 public:
  using NormalizedDropoutBase::NormalizedDropoutBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    Layout l;
    Check(ctx, scores, keep, l);
    if (!ctx->status().ok()) return;
    Tensor* m = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &m));
    const float* s = scores.flat<float>().data();
    const uint8_t* k = KeepMask(keep);
    float* out = m->flat<float>().data();
    const int64_t n = l.n, r = rows_per_block_, block = r * n;
    Shard(ctx, l, block * 30, [&](int64_t begin, int64_t end) {
      Scratch p(block), rcs(n);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t off = b * block;
        Normalize(s + off, n, p.data(), rcs.data());
        for (int64_t i = 0; i < r; ++i) {
          MaskedRow(p.data() + i * n, rcs.data(), k ? k + off + i * n : nullptr, n,
                    out + off + i * n);
        }
      }
    });
  }
};

class NormalizedDropoutGradOp : public NormalizedDropoutBase {
 public:
  using NormalizedDropoutBase::NormalizedDropoutBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    const Tensor& dm = ctx->input(2);
    Layout l;
    Check(ctx, scores, keep, l);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dm.shape() == scores.shape(),
                errors::InvalidArgument("dm must have the scores' shape"));
    Tensor *m = nullptr, *ds = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &m));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scores.shape(), &ds));
    const float* s = scores.flat<float>().data();
    const uint8_t* k = KeepMask(keep);
    const float* g = dm.flat<float>().data();
    float* m_out = m->flat<float>().data();
    float* ds_out = ds->flat<float>().data();
    const int64_t n = l.n, r = rows_per_block_, block = r * n;
    Shard(ctx, l, block * 50, [&](int64_t begin, int64_t end) {
      Scratch p(block), rcs(n), ct(n);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t off = b * block;
        Normalize(s + off, n, p.data(), rcs.data());
        Row c(ct.data(), n);
        c.setZero();
        for (int64_t i = 0; i < r; ++i) {  // m, and t = dm * m into ds_out, colsum(t) into c
          const int64_t row = off + i * n;
          MaskedRow(p.data() + i * n, rcs.data(), k ? k + row : nullptr, n, m_out + row);
          Row t(ds_out + row, n);
          t = ConstRow(g + row, n) * Row(m_out + row, n);
          if (normalize_columns_) c += t;
        }
        for (int64_t i = 0; i < r; ++i) {
          Row u(ds_out + off + i * n, n);
          Row pi(p.data() + i * n, n);
          if (normalize_columns_) u -= pi * Row(rcs.data(), n) * c;  // u = t - q * colsum(t)
          u -= pi * u.sum();  // ds = u - p * rowsum(u)
        }
      }
    });
  }
};

}  // namespace

REGISTER_OP("EanetNormalizedDropout")
    .Input("scores: float")
    .Input("keep: bool")
    .Output("m: float")
    .Attr("rows_per_block: int")
    .Attr("normalize_columns: bool")
    .Attr("epsilon: float")
    .Attr("use_keep: bool")
    .SetShapeFn(SameShapeAsScores);

REGISTER_OP("EanetNormalizedDropoutGrad")
    .Input("scores: float")
    .Input("keep: bool")
    .Input("dm: float")
    .Output("m: float")
    .Output("ds: float")
    .Attr("rows_per_block: int")
    .Attr("normalize_columns: bool")
    .Attr("epsilon: float")
    .Attr("use_keep: bool")
    .SetShapeFn(SameShapeAsScores);

REGISTER_KERNEL_BUILDER(Name("EanetNormalizedDropout").Device(DEVICE_CPU), NormalizedDropoutOp);
REGISTER_KERNEL_BUILDER(Name("EanetNormalizedDropoutGrad").Device(DEVICE_CPU),
                        NormalizedDropoutGradOp);
