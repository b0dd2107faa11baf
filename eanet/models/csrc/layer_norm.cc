// Layer normalisation over the last axis (D) as one op per direction, one pass over the (rows, D)
// activations each (eanet/models/kernels.py's layer_norm, term for term):
//   EanetLayerNorm      y = x̂ γ + β,  x̂ = (x − mean) · inv,  inv = 1 / √(var + ε)
//   EanetLayerNormGrad  from dy, with g = dy γ (mean, inv and x̂ recomputed from x):
//                       dx = inv (g − mean(g) − x̂ mean(g x̂)),  dγ = Σ dy x̂,  dβ = Σ dy
// The sums over rows go through a fixed number of partial sums added in a fixed order, so the
// results do not depend on how the threads split the work.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cmath>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT

namespace {

constexpr int64_t kRowParts = 16;  // partial sums of dγ, dβ over the rows (fixed: deterministic)

using Row = Eigen::Map<Eigen::ArrayXf>;
using ConstRow = Eigen::Map<const Eigen::ArrayXf>;
using Scratch = std::vector<float, Eigen::aligned_allocator<float>>;  // aligned: same sums each call

// x̂ of one row of d values into `x_hat`, and inv (Eigen's vectorised sums).
inline void Standardize(const float* x, int64_t d, float epsilon, float* x_hat, float& inv) {
  ConstRow in(x, d);
  Row h(x_hat, d);
  h = in - in.sum() / static_cast<float>(d);
  inv = 1.0f / std::sqrt(h.square().sum() / static_cast<float>(d) + epsilon);
  h *= inv;
}

class LayerNormBase : public OpKernel {
 public:
  explicit LayerNormBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

 protected:
  // rows and d of x, checking gamma (and beta) have d values.
  void Check(OpKernelContext* ctx, const Tensor& x, const Tensor& gamma, int64_t& rows,
             int64_t& d) const {
    OP_REQUIRES(ctx, x.dims() >= 1, errors::InvalidArgument("x must have an axis"));
    d = x.dim_size(x.dims() - 1);
    rows = d ? x.NumElements() / d : 0;
    OP_REQUIRES(ctx, gamma.dims() == 1 && gamma.dim_size(0) == d,
                errors::InvalidArgument("gamma must be (D,), D = ", d));
  }

  static void Shard(OpKernelContext* ctx, int64_t units, int64_t cost,
                    const std::function<void(int64_t, int64_t)>& work) {
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(units, cost, work);
  }

  float epsilon_ = 1e-5f;
};

class LayerNormOp : public LayerNormBase {
 public:
  using LayerNormBase::LayerNormBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma_t = ctx->input(1), &beta_t = ctx->input(2);
    int64_t rows = 0, d = 0;
    Check(ctx, x, gamma_t, rows, d);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, beta_t.shape() == gamma_t.shape(),
                errors::InvalidArgument("beta must be (D,)"));
    Tensor* y_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y_t));
    const float* in = x.flat<float>().data();
    const float* gamma = gamma_t.flat<float>().data();
    const float* beta = beta_t.flat<float>().data();
    float* y = y_t->flat<float>().data();
    const float epsilon = epsilon_;
    Shard(ctx, rows, d * 10, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float inv = 0.0f;
        float* out = y + r * d;
        Standardize(in + r * d, d, epsilon, out, inv);
        Row(out, d) = Row(out, d) * ConstRow(gamma, d) + ConstRow(beta, d);
      }
    });
  }
};

class LayerNormGradOp : public LayerNormBase {
 public:
  using LayerNormBase::LayerNormBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma_t = ctx->input(1), &dy_t = ctx->input(2);
    int64_t rows = 0, d = 0;
    Check(ctx, x, gamma_t, rows, d);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dy_t.shape() == x.shape(), errors::InvalidArgument("dy must have x's shape"));
    Tensor *dx_t = nullptr, *dgamma_t = nullptr, *dbeta_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma_t.shape(), &dgamma_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma_t.shape(), &dbeta_t));
    const float* in = x.flat<float>().data();
    const float* gamma = gamma_t.flat<float>().data();
    const float* dy = dy_t.flat<float>().data();
    float* dx = dx_t->flat<float>().data();
    const float epsilon = epsilon_;
    const int64_t parts = std::min<int64_t>(kRowParts, std::max<int64_t>(rows, 1));
    Scratch partials(parts * 2 * d, 0.0f);  // per part: dγ, then dβ
    Shard(ctx, parts, (rows / parts + 1) * d * 20, [&](int64_t begin, int64_t end) {
      Scratch x_hat(d), g(d);
      for (int64_t part = begin; part < end; ++part) {
        Row dgamma(partials.data() + part * 2 * d, d), dbeta(partials.data() + part * 2 * d + d, d);
        for (int64_t r = part * rows / parts; r < (part + 1) * rows / parts; ++r) {
          ConstRow up(dy + r * d, d);
          float inv = 0.0f;
          Standardize(in + r * d, d, epsilon, x_hat.data(), inv);
          Row h(x_hat.data(), d), gr(g.data(), d);
          gr = up * ConstRow(gamma, d);
          const float mean_g = gr.sum() / static_cast<float>(d);
          const float mean_gx = (gr * h).sum() / static_cast<float>(d);
          dgamma += up * h;
          dbeta += up;
          Row(dx + r * d, d) = inv * (gr - mean_g - h * mean_gx);
        }
      }
    });
    float* dgamma = dgamma_t->flat<float>().data();
    float* dbeta = dbeta_t->flat<float>().data();
    std::fill(dgamma, dgamma + d, 0.0f);
    std::fill(dbeta, dbeta + d, 0.0f);
    for (int64_t part = 0; part < parts; ++part) {
      for (int64_t j = 0; j < d; ++j) {
        dgamma[j] += partials[part * 2 * d + j];
        dbeta[j] += partials[part * 2 * d + d + j];
      }
    }
  }
};

// The shape functions' check: x has an axis, gamma is (D,) with D x's last dimension.
Status LastAxisShapes(shape_inference::InferenceContext* c, shape_inference::ShapeHandle* x,
                      shape_inference::ShapeHandle* gamma) {
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, gamma));
  shape_inference::DimensionHandle d;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(*x, -1), c->Dim(*gamma, 0), &d));
  return OkStatus();
}

}  // namespace

REGISTER_OP("EanetLayerNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Attr("epsilon: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, gamma;
      TF_RETURN_IF_ERROR(LastAxisShapes(c, &x, &gamma));
      TF_RETURN_IF_ERROR(c->Merge(gamma, c->input(2), &gamma));  // beta has gamma's shape
      c->set_output(0, x);
      return OkStatus();
    });

REGISTER_OP("EanetLayerNormGrad")
    .Input("x: float")
    .Input("gamma: float")
    .Input("dy: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("epsilon: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, gamma;
      TF_RETURN_IF_ERROR(LastAxisShapes(c, &x, &gamma));
      TF_RETURN_IF_ERROR(c->Merge(x, c->input(2), &x));  // dy has x's shape
      c->set_output(0, x);
      c->set_output(1, gamma);
      c->set_output(2, gamma);
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("EanetLayerNorm").Device(DEVICE_CPU), LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("EanetLayerNormGrad").Device(DEVICE_CPU), LayerNormGradOp);
