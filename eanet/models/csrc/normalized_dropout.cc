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
#include <functional>

#include "attention_block.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT
using eanet::BlockNorm;
using eanet::Scratch;

namespace {

// scores (..., N), at least one axis; the gradient op's dm has its shape.
Status SameShapeAsScores(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle scores;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &scores));
  if (c->num_inputs() > 2) TF_RETURN_IF_ERROR(c->Merge(scores, c->input(2), &scores));
  c->set_output(0, scores);
  if (c->num_outputs() > 1) c->set_output(1, scores);
  return OkStatus();
}

class NormalizedDropoutBase : public OpKernel {
 public:
  explicit NormalizedDropoutBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int rows_per_block = 1;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rows_per_block", &rows_per_block));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("normalize_columns", &norm_.normalize_columns));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &norm_.epsilon));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_keep", &use_keep_));
    OP_REQUIRES(ctx, rows_per_block > 0, errors::InvalidArgument("rows_per_block must be > 0"));
    norm_.rows = rows_per_block;
  }

 protected:
  // The block layout of `scores` into `norm` and `blocks`, or an error status on `ctx`.
  void Check(OpKernelContext* ctx, const Tensor& scores, const Tensor& keep, BlockNorm& norm,
             int64_t& blocks) const {
    norm = norm_;
    OP_REQUIRES(ctx, scores.dims() >= 1, errors::InvalidArgument("scores must have an axis"));
    norm.n = scores.dim_size(scores.dims() - 1);
    const int64_t rows = norm.n ? scores.NumElements() / norm.n : 0;
    OP_REQUIRES(ctx, rows % norm.rows == 0,
                errors::InvalidArgument("rows (", rows, ") not divisible by rows_per_block (",
                                        norm.rows, ")"));
    blocks = rows / norm.rows;
    if (use_keep_) {
      OP_REQUIRES(ctx, keep.shape() == scores.shape(),
                  errors::InvalidArgument("keep must have the scores' shape"));
    }
  }

  // The keep-mask as bytes (one bool each), or nullptr without dropout.
  const uint8_t* KeepMask(const Tensor& keep) const {
    return use_keep_ ? reinterpret_cast<const uint8_t*>(keep.flat<bool>().data()) : nullptr;
  }

  static void Shard(OpKernelContext* ctx, int64_t blocks, int64_t cost_per_block,
                    const std::function<void(int64_t, int64_t)>& work) {
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(blocks, cost_per_block, work);
  }

  BlockNorm norm_;
  bool use_keep_ = false;
};

class NormalizedDropoutOp : public NormalizedDropoutBase {
 public:
  using NormalizedDropoutBase::NormalizedDropoutBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& scores = ctx->input(0);
    const Tensor& keep = ctx->input(1);
    BlockNorm norm;
    int64_t blocks = 0;
    Check(ctx, scores, keep, norm, blocks);
    if (!ctx->status().ok()) return;
    Tensor* m = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, scores.shape(), &m));
    const float* s = scores.flat<float>().data();
    const uint8_t* k = KeepMask(keep);
    float* out = m->flat<float>().data();
    const int64_t block = norm.rows * norm.n;
    Shard(ctx, blocks, block * 30, [&](int64_t begin, int64_t end) {
      Scratch p(block), rcs(norm.n);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t off = b * block;
        norm.Normalize(s + off, p.data(), rcs.data());
        norm.Masked(p.data(), rcs.data(), k ? k + off : nullptr, out + off);
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
    BlockNorm norm;
    int64_t blocks = 0;
    Check(ctx, scores, keep, norm, blocks);
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
    const int64_t block = norm.rows * norm.n;
    Shard(ctx, blocks, block * 50, [&](int64_t begin, int64_t end) {
      Scratch p(block), rcs(norm.n), colsum(norm.n);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t off = b * block;
        norm.Normalize(s + off, p.data(), rcs.data());
        norm.Masked(p.data(), rcs.data(), k ? k + off : nullptr, m_out + off);
        norm.ScoreGradient(p.data(), rcs.data(), m_out + off, g + off, ds_out + off,
                           colsum.data());
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
