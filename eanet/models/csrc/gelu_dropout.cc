// The MLP's tanh-approximated GELU and the dropout after it as one op per direction, one pass
// over the (B, N, mlp_dim) hidden activations instead of a dozen (eanet/models/kernels.py's
// gelu_dropout; the dropout mask is the 16-bit one of dropout_stream.h, drawn again for the
// gradient instead of stored):
//   EanetGeluDropout      y  = keep ? gelu(x) * scale : 0,
//                         gelu(x) = 0.5 x (1 + t),  t = tanh(c (x + a x³)),  c = √(2/π), a = 0.044715
//   EanetGeluDropoutGrad  dx = keep ? dy * scale * gelu'(x) : 0,
//                         gelu'(x) = 0.5 (1 + t) + 0.5 x (1 − t²) c (1 + 3a x²)
// Without dropout (use_keep false) keep is always true and scale 1. tanh is Eigen's vectorised
// one, as TensorFlow's Tanh op uses.
#include "Eigen/Core"
#include "dropout_stream.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;  // NOLINT

namespace {

constexpr float kA = 0.044715f, kC = 0.7978845608028654f;
using Values = Eigen::Map<Eigen::ArrayXf>;
using ConstValues = Eigen::Map<const Eigen::ArrayXf>;

class GeluDropoutBase : public OpKernel {
 public:
  explicit GeluDropoutBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threshold", &threshold_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_keep", &use_keep_));
    OP_REQUIRES(ctx, threshold_ >= 0 && threshold_ <= 65536,
                errors::InvalidArgument("threshold must be in [0, 65536]"));
  }

 protected:
  // work(first, count, scale_or_zero) over chunks of `size` elements: scale_or_zero[i] is
  // scale for a kept element, 0 for a dropped one.
  template <typename Work>
  void ForEachChunk(OpKernelContext* ctx, const Tensor& seed, int64_t size,
                    const Work& work) const {
    const int threshold = threshold_;
    const float scale = use_keep_ ? scale_ : 1.0f;
    auto run = [&](int64_t first, int64_t count, const uint16_t* halves) {
      alignas(64) float factor[eanet::kChunk];
      for (int64_t i = 0; i < count; ++i) {
        factor[i] = (halves == nullptr || halves[i] >= threshold) ? scale : 0.0f;
      }
      work(first, count, factor);
    };
    if (use_keep_ && !eanet::CheckSeed(ctx, seed)) return;
    const eanet::Stream stream = use_keep_ ? eanet::StreamFromSeed(seed) : eanet::Stream{};
    eanet::ForEachChunk(ctx, use_keep_ ? &stream : nullptr, size, run, eanet::kChunk * 20);
  }

  int threshold_ = 0;
  float scale_ = 1.0f;
  bool use_keep_ = false;
};

class GeluDropoutOp : public GeluDropoutBase {
 public:
  using GeluDropoutBase::GeluDropoutBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    const float* in = x.flat<float>().data();
    float* out = y->flat<float>().data();
    ForEachChunk(ctx, ctx->input(1), x.NumElements(),
                 [&](int64_t first, int64_t count, const float* factor) {
                   ConstValues v(in + first, count);
                   alignas(64) float t_buffer[eanet::kChunk];
                   Values t(t_buffer, count);
                   t = (kC * (v + kA * v * v * v)).tanh();
                   Values(out + first, count) =
                       0.5f * v * (1.0f + t) * ConstValues(factor, count);
                 });
  }
};

class GeluDropoutGradOp : public GeluDropoutBase {
 public:
  using GeluDropoutBase::GeluDropoutBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                errors::InvalidArgument("dy must have x's shape"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    const float* in = x.flat<float>().data();
    const float* up = dy.flat<float>().data();
    float* out = dx->flat<float>().data();
    ForEachChunk(ctx, ctx->input(2), x.NumElements(),
                 [&](int64_t first, int64_t count, const float* factor) {
                   ConstValues v(in + first, count);
                   alignas(64) float buffer[2 * eanet::kChunk];
                   Values x2(buffer, count), t(buffer + eanet::kChunk, count);
                   x2 = v * v;
                   t = (kC * (v + kA * x2 * v)).tanh();
                   Values(out + first, count) =
                       ConstValues(up + first, count) * ConstValues(factor, count) *
                       (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * kC * (1.0f + 3.0f * kA * x2));
                 });
  }
};

}  // namespace

REGISTER_OP("EanetGeluDropout")
    .Input("x: float")
    .Input("seed: int32")
    .Output("y: float")
    .Attr("threshold: int")
    .Attr("scale: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      TF_RETURN_IF_ERROR(eanet::SeedShape(c, 1));
      c->set_output(0, c->input(0));
      return OkStatus();
    });

REGISTER_OP("EanetGeluDropoutGrad")
    .Input("x: float")
    .Input("dy: float")
    .Input("seed: int32")
    .Output("dx: float")
    .Attr("threshold: int")
    .Attr("scale: float")
    .Attr("use_keep: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &x));  // dy has x's shape
      TF_RETURN_IF_ERROR(eanet::SeedShape(c, 2));
      c->set_output(0, x);
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("EanetGeluDropout").Device(DEVICE_CPU), GeluDropoutOp);
REGISTER_KERNEL_BUILDER(Name("EanetGeluDropoutGrad").Device(DEVICE_CPU), GeluDropoutGradOp);
