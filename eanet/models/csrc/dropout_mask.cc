// The fused attention's 16-bit dropout mask (eanet/models/kernels.py's keep_mask_16bit) as one
// op (dropout_stream.h has the random stream, TensorFlow's own, bit for bit):
//   EanetKeepMask16(shape, seed)   keep (bool, `shape`), the mask TensorFlow's ops would give
//                                  (tf.random.stateless_uniform(uint32) → bitcast to uint16 →
//                                  `>= threshold`), in one pass, without the 16-bit intermediate
#include "dropout_stream.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/tensor_util.h"

using namespace tensorflow;  // NOLINT
using eanet::CheckSeed;
using eanet::ForEachChunk;
using eanet::StreamFromSeed;

namespace {

class KeepMask16Op : public OpKernel {
 public:
  explicit KeepMask16Op(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threshold", &threshold_));
    OP_REQUIRES(ctx, threshold_ >= 0 && threshold_ <= 65536,
                errors::InvalidArgument("threshold must be in [0, 65536]"));
  }

  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(ctx->input(0).shape()),
                errors::InvalidArgument("shape must be a vector, got ",
                                        ctx->input(0).shape().DebugString()));
    TensorShape shape;
    OP_REQUIRES_OK(ctx, tensor::MakeShape(ctx->input(0), &shape));
    const Tensor& seed = ctx->input(1);
    if (!CheckSeed(ctx, seed)) return;
    Tensor* keep = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &keep));
    bool* out = keep->flat<bool>().data();
    const int threshold = threshold_;
    const eanet::Stream stream = StreamFromSeed(seed);
    ForEachChunk(ctx, &stream, shape.num_elements(),
                 [&](int64_t first, int64_t count, const uint16_t* halves) {
                   for (int64_t i = 0; i < count; ++i) out[first + i] = halves[i] >= threshold;
                 });
  }

 private:
  int threshold_ = 0;
};

}  // namespace

REGISTER_OP("EanetKeepMask16")
    .Input("shape: int32")
    .Input("seed: int32")
    .Output("keep: bool")
    .Attr("threshold: int")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle shape, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &shape));
      TF_RETURN_IF_ERROR(eanet::SeedShape(c, 1));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(0, &out));
      c->set_output(0, out);
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("EanetKeepMask16").Device(DEVICE_CPU).HostMemory("shape"),
                        KeepMask16Op);
