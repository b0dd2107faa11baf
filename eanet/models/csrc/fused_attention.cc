// Whole attention calls as one CPU op per direction: the score matmul, the normalisation and
// dropout (attention_block.h) and the read-out matmul, one block of rows at a time, so the
// (B, rows, N) scores, probabilities and their gradients live in a thread's cache and are never
// written to memory. The backward ops recompute them the same way (the gradients written out
// in eanet/models/kernels.py's docstrings). The matmuls are Eigen's (-march=native).
//
// Self-attention (ViT; kernels.self_attention_context), the heads interleaved as the layer's
// projections give and take them, so neither the query nor the context is transposed:
//   EanetSelfAttention      query (B, N, H, D), keys (B, M, D), values (B, M, V),
//                           keep (B, H·N, M) → out (B, N, H, V): per head h,
//                           out_h = m_h · values,  m_h = keep_h · softmax(query_h · keysᵀ)
//   EanetSelfAttentionGrad  + g (B, N, H, V), the gradient at out → dquery, dkeys, dvalues:
//                           dm_h = g_h · valuesᵀ, dvalues = Σ_h m_hᵀ · g_h, ds_h
//                           (attention_block.h), dquery_h = ds_h · keys, dkeys = Σ_h ds_hᵀ · query_h
//   (blocks of 64 query rows of one image and head.)
// External attention (EANet; kernels.external_attention_context), in the block's (B, N, D)
// layout, so neither the input nor the output is transposed:
//   EanetExternalAttention      x (B, N, D), score_kernel (D, G·S), read_kernel (G·S, D),
//                               keep (B, G·S, N) → out (B, N, D) = Σ_g m_gᵀ · read_g,
//                               m_g = keep · double-normalised(score_kernel_gᵀ · xᵀ)  (S × N)
//   EanetExternalAttentionGrad  + g (B, N, D) → dx, dscore_kernel, dread_kernel:
//                               dm_g = read_g · gᵀ, dread_g = Σ_B m_g · g, ds_g,
//                               dscore_kernel_g = Σ_B xᵀ · ds_gᵀ, dx = Σ_g ds_gᵀ · score_kernel_gᵀ
//   (one block per (image, group): its S memory slots.)
// Sums over the batch go through a fixed number of partial sums added in a fixed order, so the
// results do not depend on how the threads split the work.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <functional>
#include <type_traits>

#include "Eigen/Core"
#include "attention_block.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT
using eanet::BlockNorm;
using eanet::Scratch;

namespace {

using MatrixR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Matrix = Eigen::Map<MatrixR>;
using ConstMatrix = Eigen::Map<const MatrixR>;
// Columns [c, c + width) of a row-major matrix with `cols` columns.
using Columns = Eigen::Map<MatrixR, 0, Eigen::OuterStride<>>;
using ConstColumns = Eigen::Map<const MatrixR, 0, Eigen::OuterStride<>>;

constexpr int64_t kSelfAttentionRows = 64;  // rows per block: 64 × N floats per scratch buffer
constexpr int64_t kBatchParts = 8;          // partial sums over the batch (fixed: deterministic)

void Shard(OpKernelContext* ctx, int64_t units, int64_t cost_per_unit,
           const std::function<void(int64_t, int64_t)>& work) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(units, cost_per_unit, work);
}

// Input i's float data.
const float* Floats(OpKernelContext* ctx, int i) { return ctx->input(i).flat<float>().data(); }

const uint8_t* KeepMask(const Tensor& keep, bool use_keep) {
  return use_keep ? reinterpret_cast<const uint8_t*>(keep.flat<bool>().data()) : nullptr;
}

Status CheckRank3(const Tensor& t, const char* name) {
  if (t.dims() != 3) return errors::InvalidArgument(name, " must be rank 3, got ", t.shape().DebugString());
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Self-attention.

struct SelfAttentionShapes {
  int64_t batch, n, heads, d, keys, v;  // n query rows per head, `keys` key rows
};

// Rows [row, row + rows) of head h of image b in a (B, N, H, width) tensor: (rows × width).
template <typename T>
Eigen::Map<T, 0, Eigen::OuterStride<>> HeadRows(typename std::conditional<
    std::is_const<T>::value, const float*, float*>::type data, const SelfAttentionShapes& s,
    int64_t b, int64_t h, int64_t row, int64_t rows, int64_t width) {
  return Eigen::Map<T, 0, Eigen::OuterStride<>>(data + ((b * s.n + row) * s.heads + h) * width,
                                                rows, width, Eigen::OuterStride<>(s.heads * width));
}

class SelfAttentionBase : public OpKernel {
 public:
  explicit SelfAttentionBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_keep", &use_keep_));
  }

 protected:
  void Check(OpKernelContext* ctx, SelfAttentionShapes& s) const {
    const Tensor &q = ctx->input(0), &k = ctx->input(1), &v = ctx->input(2), &keep = ctx->input(3);
    OP_REQUIRES(ctx, q.dims() == 4,
                errors::InvalidArgument("query must be (B, N, H, D), got ", q.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckRank3(k, "keys"));
    OP_REQUIRES_OK(ctx, CheckRank3(v, "values"));
    s = {q.dim_size(0), q.dim_size(1), q.dim_size(2), q.dim_size(3), k.dim_size(1), v.dim_size(2)};
    OP_REQUIRES(ctx, k.dim_size(0) == s.batch && v.dim_size(0) == s.batch &&
                         k.dim_size(2) == s.d && v.dim_size(1) == s.keys,
                errors::InvalidArgument("query (B, N, H, D), keys (B, M, D), values (B, M, V) "
                                        "disagree: ", q.shape().DebugString(), " ",
                                        k.shape().DebugString(), " ", v.shape().DebugString()));
    if (use_keep_) {
      OP_REQUIRES(ctx, keep.shape() == TensorShape({s.batch, s.heads * s.n, s.keys}),
                  errors::InvalidArgument("keep must be (B, H·N, M)"));
    }
  }

  // The keep-mask of rows [row, row + rows) of head h of image b (its (H·N, M) layout).
  static const uint8_t* KeepRows(const uint8_t* keep, const SelfAttentionShapes& s, int64_t b,
                                 int64_t h, int64_t row) {
    return keep ? keep + ((b * s.heads + h) * s.n + row) * s.keys : nullptr;
  }

  bool use_keep_ = false;
};

class SelfAttentionOp : public SelfAttentionBase {
 public:
  using SelfAttentionBase::SelfAttentionBase;

  void Compute(OpKernelContext* ctx) override {
    SelfAttentionShapes s;
    Check(ctx, s);
    if (!ctx->status().ok()) return;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.batch, s.n, s.heads, s.v}), &out));
    if (out->NumElements() == 0) return;
    if (s.keys == 0) {  // a softmax over no keys: every context is an empty sum
      out->flat<float>().setZero();
      return;
    }
    const float* q = Floats(ctx, 0);
    const float* k = Floats(ctx, 1);
    const float* v = Floats(ctx, 2);
    const uint8_t* keep = KeepMask(ctx->input(3), use_keep_);
    float* o = out->flat<float>().data();
    const int64_t blocks = (s.n + kSelfAttentionRows - 1) / kSelfAttentionRows;
    Shard(ctx, s.batch * s.heads * blocks,
          kSelfAttentionRows * s.keys * (2 * s.d + 2 * s.v + 30),
          [&](int64_t begin, int64_t end) {
            Scratch p(kSelfAttentionRows * s.keys);
            for (int64_t unit = begin; unit < end; ++unit) {
              const int64_t b = unit / (s.heads * blocks), h = unit / blocks % s.heads;
              const int64_t row = (unit % blocks) * kSelfAttentionRows;
              const int64_t rows = std::min(kSelfAttentionRows, s.n - row);
              BlockNorm norm{rows, s.keys, false, 0.0f};
              Matrix block(p.data(), rows, s.keys);  // the scores, then p, then m, in place
              block.noalias() = HeadRows<const MatrixR>(q, s, b, h, row, rows, s.d) *
                                ConstMatrix(k + b * s.keys * s.d, s.keys, s.d).transpose();
              norm.Normalize(p.data(), p.data(), nullptr);
              norm.Masked(p.data(), nullptr, KeepRows(keep, s, b, h, row), p.data());
              HeadRows<MatrixR>(o, s, b, h, row, rows, s.v).noalias() =
                  block * ConstMatrix(v + b * s.keys * s.v, s.keys, s.v);
            }
          });
  }
};

class SelfAttentionGradOp : public SelfAttentionBase {
 public:
  using SelfAttentionBase::SelfAttentionBase;

  void Compute(OpKernelContext* ctx) override {
    SelfAttentionShapes s;
    Check(ctx, s);
    if (!ctx->status().ok()) return;
    const Tensor& g_in = ctx->input(4);
    OP_REQUIRES(ctx, g_in.shape() == TensorShape({s.batch, s.n, s.heads, s.v}),
                errors::InvalidArgument("g must be (B, N, H, V)"));
    Tensor *dq_t = nullptr, *dk_t = nullptr, *dv_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dq_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dk_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dv_t));
    if (s.keys == 0 || s.n == 0 || s.heads == 0) {  // no scores: no gradient flows anywhere
      dq_t->flat<float>().setZero();
      dk_t->flat<float>().setZero();
      dv_t->flat<float>().setZero();
      return;
    }
    const float* q = Floats(ctx, 0);
    const float* k = Floats(ctx, 1);
    const float* v = Floats(ctx, 2);
    const uint8_t* keep = KeepMask(ctx->input(3), use_keep_);
    const float* g = Floats(ctx, 4);
    float* dq = dq_t->flat<float>().data();
    float* dk = dk_t->flat<float>().data();
    float* dv = dv_t->flat<float>().data();
    // One image per unit: its dkeys and dvalues sum over all its heads and row blocks.
    Shard(ctx, s.batch, s.heads * s.n * s.keys * (5 * s.d + 2 * s.v + 50),
          [&](int64_t begin, int64_t end) {
      const int64_t block = kSelfAttentionRows * s.keys;
      Scratch p(block), m(use_keep_ ? block : 0), ds(block), colsum(s.keys);
      for (int64_t b = begin; b < end; ++b) {
        ConstMatrix keys(k + b * s.keys * s.d, s.keys, s.d), values(v + b * s.keys * s.v, s.keys, s.v);
        Matrix dkeys(dk + b * s.keys * s.d, s.keys, s.d), dvalues(dv + b * s.keys * s.v, s.keys, s.v);
        dkeys.setZero();
        dvalues.setZero();
        for (int64_t h = 0; h < s.heads; ++h) {
          for (int64_t row = 0; row < s.n; row += kSelfAttentionRows) {
            const int64_t rows = std::min(kSelfAttentionRows, s.n - row);
            BlockNorm norm{rows, s.keys, false, 0.0f};
            const auto query = HeadRows<const MatrixR>(q, s, b, h, row, rows, s.d);
            const auto grad = HeadRows<const MatrixR>(g, s, b, h, row, rows, s.v);
            Matrix probabilities(p.data(), rows, s.keys), dscores(ds.data(), rows, s.keys);
            probabilities.noalias() = query * keys.transpose();
            norm.Normalize(p.data(), p.data(), nullptr);
            float* kept = p.data();
            if (keep) {
              kept = m.data();
              norm.Masked(p.data(), nullptr, KeepRows(keep, s, b, h, row), kept);
            }
            Matrix masked(kept, rows, s.keys);
            dscores.noalias() = grad * values.transpose();  // dm
            dvalues.noalias() += masked.transpose() * grad;
            norm.ScoreGradient(p.data(), nullptr, kept, ds.data(), ds.data(), colsum.data());
            HeadRows<MatrixR>(dq, s, b, h, row, rows, s.d).noalias() = dscores * keys;
            dkeys.noalias() += dscores.transpose() * query;
          }
        }
      }
    });
  }
};

// ---------------------------------------------------------------------------------------------
// External attention.

struct ExternalAttentionShapes {
  int64_t batch, n, d, groups, slots;  // slots: S, the memory slots per group
};

class ExternalAttentionBase : public OpKernel {
 public:
  explicit ExternalAttentionBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_keep", &use_keep_));
    OP_REQUIRES(ctx, groups_ > 0, errors::InvalidArgument("groups must be > 0"));
  }

 protected:
  void Check(OpKernelContext* ctx, ExternalAttentionShapes& s) const {
    const Tensor &x = ctx->input(0), &kernel = ctx->input(1), &read = ctx->input(2),
                 &keep = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckRank3(x, "x"));
    OP_REQUIRES(ctx, kernel.dims() == 2 && read.dims() == 2,
                errors::InvalidArgument("score_kernel and read_kernel must be matrices"));
    const int64_t memory = kernel.dim_size(1);
    s = {x.dim_size(0), x.dim_size(1), x.dim_size(2), groups_, memory / groups_};
    OP_REQUIRES(ctx, memory % groups_ == 0 && kernel.dim_size(0) == s.d &&
                         read.dim_size(0) == memory && read.dim_size(1) == s.d,
                errors::InvalidArgument("x (B, N, D), score_kernel (D, G·S), read_kernel "
                                        "(G·S, D) disagree: ", x.shape().DebugString(), " ",
                                        kernel.shape().DebugString(), " ",
                                        read.shape().DebugString()));
    if (use_keep_) {
      OP_REQUIRES(ctx, keep.shape() == TensorShape({s.batch, memory, s.n}),
                  errors::InvalidArgument("keep must be (B, G·S, N)"));
    }
  }

  // score_kernel_g, columns [g·S, (g+1)·S) of the (D, G·S) score kernel: (D × S).
  static ConstColumns ScoreColumns(const float* kernel, const ExternalAttentionShapes& s,
                                   int64_t grp) {
    return ConstColumns(kernel + grp * s.slots, s.d, s.slots,
                        Eigen::OuterStride<>(s.groups * s.slots));
  }

  int groups_ = 1;
  float epsilon_ = 0.0f;
  bool use_keep_ = false;
};

class ExternalAttentionOp : public ExternalAttentionBase {
 public:
  using ExternalAttentionBase::ExternalAttentionBase;

  void Compute(OpKernelContext* ctx) override {
    ExternalAttentionShapes s;
    Check(ctx, s);
    if (!ctx->status().ok()) return;
    Tensor* out_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &out_t));
    if (out_t->NumElements() == 0) return;
    if (s.slots == 0) {  // no memory slots: the read-out is an empty sum
      out_t->flat<float>().setZero();
      return;
    }
    const float* x = Floats(ctx, 0);
    const float* kernel = Floats(ctx, 1);
    const float* read = Floats(ctx, 2);
    const uint8_t* keep = KeepMask(ctx->input(3), use_keep_);
    float* out = out_t->flat<float>().data();
    const int64_t memory = s.groups * s.slots, nd = s.n * s.d;
    // One image per unit: its output sums over the groups.
    Shard(ctx, s.batch, memory * s.n * (4 * s.d + 40), [&](int64_t begin, int64_t end) {
      Scratch p(s.slots * s.n), rcs(s.n);
      const BlockNorm norm{s.slots, s.n, true, epsilon_};
      for (int64_t b = begin; b < end; ++b) {
        ConstMatrix x_b(x + b * nd, s.n, s.d);
        Matrix output(out + b * nd, s.n, s.d);
        output.setZero();
        for (int64_t grp = 0; grp < s.groups; ++grp) {
          Matrix block(p.data(), s.slots, s.n);  // the scores, then p, then m, in place
          block.noalias() = ScoreColumns(kernel, s, grp).transpose() * x_b.transpose();
          norm.Normalize(p.data(), p.data(), rcs.data());
          norm.Masked(p.data(), rcs.data(),
                      keep ? keep + (b * memory + grp * s.slots) * s.n : nullptr, p.data());
          output.noalias() +=
              block.transpose() * ConstMatrix(read + grp * s.slots * s.d, s.slots, s.d);
        }
      }
    });
  }
};

class ExternalAttentionGradOp : public ExternalAttentionBase {
 public:
  using ExternalAttentionBase::ExternalAttentionBase;

  void Compute(OpKernelContext* ctx) override {
    ExternalAttentionShapes s;
    Check(ctx, s);
    if (!ctx->status().ok()) return;
    const Tensor& g_in = ctx->input(4);
    OP_REQUIRES(ctx, g_in.shape() == ctx->input(0).shape(),
                errors::InvalidArgument("g must be (B, N, D)"));
    Tensor *dx_t = nullptr, *dkernel_t = nullptr, *dread_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dkernel_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &dread_t));
    if (s.n == 0 || s.slots == 0) {  // no scores: no gradient flows anywhere
      dx_t->flat<float>().setZero();
      dkernel_t->flat<float>().setZero();
      dread_t->flat<float>().setZero();
      return;
    }
    const float* x = Floats(ctx, 0);
    const float* kernel = Floats(ctx, 1);
    const float* read = Floats(ctx, 2);
    const uint8_t* keep = KeepMask(ctx->input(3), use_keep_);
    const float* g = Floats(ctx, 4);
    float* dx = dx_t->flat<float>().data();
    const int64_t memory = s.groups * s.slots, nd = s.n * s.d, weights = memory * s.d;
    // The weight gradients sum over the batch: kBatchParts fixed slices of it, each summed in
    // order into its own partial (dscore_kernel, then dread_kernel), then the partials in order.
    const int64_t parts = std::min<int64_t>(kBatchParts, std::max<int64_t>(s.batch, 1));
    Scratch partials(parts * 2 * weights, 0.0f);
    Shard(ctx, parts, (s.batch / parts + 1) * memory * s.n * (8 * s.d + 60),
          [&](int64_t begin, int64_t end) {
      Scratch p(s.slots * s.n), m(s.slots * s.n), ds(s.slots * s.n), rcs(s.n), colsum(s.n);
      const BlockNorm norm{s.slots, s.n, true, epsilon_};
      for (int64_t part = begin; part < end; ++part) {
        float* dkernel = partials.data() + part * 2 * weights;  // (D, G·S)
        Matrix dread(partials.data() + part * 2 * weights + weights, memory, s.d);
        for (int64_t b = part * s.batch / parts; b < (part + 1) * s.batch / parts; ++b) {
          ConstMatrix x_b(x + b * nd, s.n, s.d), grad(g + b * nd, s.n, s.d);
          Matrix dx_b(dx + b * nd, s.n, s.d);
          dx_b.setZero();
          for (int64_t grp = 0; grp < s.groups; ++grp) {
            const ConstColumns kernel_g = ScoreColumns(kernel, s, grp);  // (D × S)
            ConstMatrix read_g(read + grp * s.slots * s.d, s.slots, s.d);
            Matrix scores(p.data(), s.slots, s.n), masked(m.data(), s.slots, s.n),
                dscores(ds.data(), s.slots, s.n);
            scores.noalias() = kernel_g.transpose() * x_b.transpose();
            norm.Normalize(p.data(), p.data(), rcs.data());
            norm.Masked(p.data(), rcs.data(),
                        keep ? keep + (b * memory + grp * s.slots) * s.n : nullptr, m.data());
            dscores.noalias() = read_g * grad.transpose();  // dm
            dread.block(grp * s.slots, 0, s.slots, s.d).noalias() += masked * grad;
            norm.ScoreGradient(p.data(), rcs.data(), m.data(), ds.data(), ds.data(),
                               colsum.data());
            Columns(dkernel + grp * s.slots, s.d, s.slots, Eigen::OuterStride<>(memory))
                .noalias() += x_b.transpose() * dscores.transpose();
            dx_b.noalias() += dscores.transpose() * kernel_g.transpose();
          }
        }
      }
    });
    Matrix dkernel(dkernel_t->flat<float>().data(), s.d, memory);
    Matrix dread(dread_t->flat<float>().data(), memory, s.d);
    dkernel.setZero();
    dread.setZero();
    for (int64_t part = 0; part < parts; ++part) {
      dkernel += ConstMatrix(partials.data() + part * 2 * weights, s.d, memory);
      dread += ConstMatrix(partials.data() + part * 2 * weights + weights, memory, s.d);
    }
  }
};

// Shape functions: the ranks first, then the dimensions the inputs share (the kernels check
// the same again on the concrete shapes).
using shape_inference::DimensionHandle;
using shape_inference::ShapeHandle;

// query (B, N, H, D), keys (B, M, D), values (B, M, V) → out (B, N, H, V).
Status SelfAttentionShape(shape_inference::InferenceContext* c, ShapeHandle* out) {
  ShapeHandle q, k, v;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &q));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &k));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &v));
  DimensionHandle batch = c->Dim(q, 0), width = c->Dim(q, 3), keys = c->Dim(k, 1);
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(k, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(v, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(width, c->Dim(k, 2), &width));
  TF_RETURN_IF_ERROR(c->Merge(keys, c->Dim(v, 1), &keys));
  *out = c->MakeShape({batch, c->Dim(q, 1), c->Dim(q, 2), c->Dim(v, 2)});
  return OkStatus();
}

// x (B, N, D), score_kernel (D, G·S), read_kernel (G·S, D) → x's shape.
Status ExternalAttentionShape(shape_inference::InferenceContext* c, ShapeHandle* x) {
  ShapeHandle kernel, read;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &kernel));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &read));
  DimensionHandle width = c->Dim(*x, 2), memory = c->Dim(kernel, 1);
  TF_RETURN_IF_ERROR(c->Merge(width, c->Dim(kernel, 0), &width));
  TF_RETURN_IF_ERROR(c->Merge(width, c->Dim(read, 1), &width));
  TF_RETURN_IF_ERROR(c->Merge(memory, c->Dim(read, 0), &memory));
  int groups = 1;
  TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
  if (groups <= 0) return errors::InvalidArgument("groups must be > 0, got ", groups);
  if (c->ValueKnown(memory) && c->Value(memory) % groups != 0) {
    return errors::InvalidArgument("score_kernel's G·S = ", c->Value(memory),
                                   " columns are not divisible by groups = ", groups);
  }
  return OkStatus();
}

}  // namespace

REGISTER_OP("EanetSelfAttention")
    .Input("query: float")
    .Input("keys: float")
    .Input("values: float")
    .Input("keep: bool")
    .Output("out: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(SelfAttentionShape(c, &out));
      c->set_output(0, out);
      return OkStatus();
    });

REGISTER_OP("EanetSelfAttentionGrad")
    .Input("query: float")
    .Input("keys: float")
    .Input("values: float")
    .Input("keep: bool")
    .Input("g: float")
    .Output("dquery: float")
    .Output("dkeys: float")
    .Output("dvalues: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(SelfAttentionShape(c, &out));
      TF_RETURN_IF_ERROR(c->Merge(c->input(4), out, &out));  // g has the output's shape
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
      return OkStatus();
    });

REGISTER_OP("EanetExternalAttention")
    .Input("x: float")
    .Input("score_kernel: float")
    .Input("read_kernel: float")
    .Input("keep: bool")
    .Output("out: float")
    .Attr("groups: int")
    .Attr("epsilon: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(ExternalAttentionShape(c, &x));
      c->set_output(0, x);
      return OkStatus();
    });

REGISTER_OP("EanetExternalAttentionGrad")
    .Input("x: float")
    .Input("score_kernel: float")
    .Input("read_kernel: float")
    .Input("keep: bool")
    .Input("g: float")
    .Output("dx: float")
    .Output("dscore_kernel: float")
    .Output("dread_kernel: float")
    .Attr("groups: int")
    .Attr("epsilon: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(ExternalAttentionShape(c, &x));
      TF_RETURN_IF_ERROR(c->Merge(c->input(4), x, &x));  // g has x's shape
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("EanetSelfAttention").Device(DEVICE_CPU), SelfAttentionOp);
REGISTER_KERNEL_BUILDER(Name("EanetSelfAttentionGrad").Device(DEVICE_CPU), SelfAttentionGradOp);
REGISTER_KERNEL_BUILDER(Name("EanetExternalAttention").Device(DEVICE_CPU), ExternalAttentionOp);
REGISTER_KERNEL_BUILDER(Name("EanetExternalAttentionGrad").Device(DEVICE_CPU),
                        ExternalAttentionGradOp);
