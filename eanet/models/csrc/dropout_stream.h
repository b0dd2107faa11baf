// The 16-bit dropout's random stream, drawn in place: the uint32 words of TensorFlow's
// tf.random.stateless_uniform (Philox-4x32-10), bit for bit, as 16-bit halves, 16 Philox blocks
// at a time on vector registers. Used by dropout_mask.cc and gelu_dropout.cc.
//
// TensorFlow's StatelessRandomUniformFullIntV2 computes one Philox block (four uint32 words) at
// a time with scalar code; here 16 blocks go through the ten rounds side by side, so the
// compiler runs each round on vector registers (-march=native: 16 lanes of 32 bits on AVX-512,
// 8 on AVX2), and the words become keep decisions while still in cache. Element e of a tensor is
// kept when 16-bit half e % 2 of word e / 2 of the stream is >= threshold.
//
// Stream (TensorFlow's stateless_random_get_key_counter + Philox, tsl/lib/random):
//   key = (0x3ec8f720, 0x02461e29), counter = (seed0, sign(seed0), seed1, sign(seed1)) as 32-bit
//   words of the int64-widened seed; mix = Philox(counter, key); then key = mix[0..1],
//   counter = (0, 0, mix[2], mix[3]); block b of the output is Philox(counter + b, key).
#ifndef EANET_DROPOUT_STREAM_H_
#define EANET_DROPOUT_STREAM_H_

#define EIGEN_USE_THREADS
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace eanet {

using tensorflow::int32;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

constexpr uint32_t kW32A = 0x9E3779B9, kW32B = 0xBB67AE85;   // Philox key increments
constexpr uint32_t kM4x32A = 0xD2511F53, kM4x32B = 0xCD9E8D57;  // Philox multipliers
constexpr int64_t kLanes = 16;                                  // Philox blocks side by side
constexpr int64_t kChunk = kLanes * 8;                          // elements per chunk (8 per block)

struct Stream {
  uint32_t key[2];
  uint32_t counter[4];
};

// Philox on vector registers: one GCC/Clang vector of 32-bit lanes per Philox word, 16 lanes on
// AVX-512, 8 elsewhere (the compiler lowers them to the CPU's registers; -march=native).
#ifdef __AVX512F__
constexpr int64_t kVectorLanes = 16;
#else
constexpr int64_t kVectorLanes = 8;
#endif
constexpr int64_t kVectors = kLanes / kVectorLanes;
typedef uint32_t U32s __attribute__((vector_size(kVectorLanes * 4)));
typedef uint64_t U64s __attribute__((vector_size(kVectorLanes * 4)));

// The high 32 bits of the 32 × 32-bit products c · m, lane by lane: the even and the odd lanes
// multiplied as 64-bit lanes (one vpmuludq each), their high halves put back in place.
inline U32s MulHigh(U32s c, uint32_t m) {
  const U64s wide = reinterpret_cast<U64s>(c);
  const U64s even = (wide & 0xFFFFFFFFull) * m;
  const U64s odd = (wide >> 32) * m;
  return reinterpret_cast<U32s>(even >> 32) |
         reinterpret_cast<U32s>(odd & 0xFFFFFFFF00000000ull);
}

// Ten Philox-4x32 rounds (tsl::random::PhiloxRandom::operator()) on c[word], lane by lane.
inline void PhiloxRounds(U32s (&c)[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const U32s hi0 = MulHigh(c[0], kM4x32A), lo0 = c[0] * kM4x32A;
    const U32s hi1 = MulHigh(c[2], kM4x32B), lo1 = c[2] * kM4x32B;
    c[0] = hi1 ^ c[1] ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k1;
    c[3] = lo0;
    k0 += kW32A;
    k1 += kW32B;
  }
}

// TensorFlow's seed scrambling (stateless_random_get_key_counter for Philox).
inline Stream StreamFromSeed(const Tensor& seed) {
  const auto s = seed.flat<int32>();
  const uint64_t seed0 = static_cast<uint64_t>(static_cast<int64_t>(s(0)));
  const uint64_t seed1 = static_cast<uint64_t>(static_cast<int64_t>(s(1)));
  U32s c[4] = {};
  c[0][0] = static_cast<uint32_t>(seed0);
  c[1][0] = static_cast<uint32_t>(seed0 >> 32);
  c[2][0] = static_cast<uint32_t>(seed1);
  c[3][0] = static_cast<uint32_t>(seed1 >> 32);
  PhiloxRounds(c, 0x3ec8f720, 0x02461e29);
  return Stream{{c[0][0], c[1][0]}, {0, 0, c[2][0], c[3][0]}};
}

// The 16-bit halves of chunk `chunk` of the stream (kChunk of them, element order) into `halves`.
inline void ChunkHalves(const Stream& st, int64_t chunk, uint16_t* halves) {
  U32s c[kVectors][4];
  const uint64_t low = (static_cast<uint64_t>(st.counter[1]) << 32) | st.counter[0];
  for (int64_t l = 0; l < kLanes; ++l) {
    // 128-bit counter + block index (Philox's Skip), carried into the upper words.
    const uint64_t block = static_cast<uint64_t>(chunk * kLanes + l);
    const uint64_t sum = low + block;
    const uint64_t carry = sum < low ? 1 : 0;
    const uint64_t high = ((static_cast<uint64_t>(st.counter[3]) << 32) | st.counter[2]) + carry;
    U32s* lane = c[l / kVectorLanes];
    const int64_t i = l % kVectorLanes;
    lane[0][i] = static_cast<uint32_t>(sum);
    lane[1][i] = static_cast<uint32_t>(sum >> 32);
    lane[2][i] = static_cast<uint32_t>(high);
    lane[3][i] = static_cast<uint32_t>(high >> 32);
  }
  for (auto& vector : c) PhiloxRounds(vector, st.key[0], st.key[1]);
  // Word j of block l is word 4l + j of the stream; its low half is the earlier element
  // (little-endian, as tf.bitcast(uint32 → uint16)).
  uint32_t words[kLanes * 4];
  for (int64_t l = 0; l < kLanes; ++l) {
    for (int j = 0; j < 4; ++j) words[4 * l + j] = c[l / kVectorLanes][j][l % kVectorLanes];
  }
  std::memcpy(halves, words, sizeof(words));
}

// Runs work(first, count, halves) over chunks of kChunk elements covering `size`, in parallel:
// `halves` are the stream's for those elements, or nullptr when `st` is (no dropout).
template <typename Work>
void ForEachChunk(OpKernelContext* ctx, const Stream* st, int64_t size, const Work& work,
                  int64_t cost_per_chunk = kChunk * 4) {
  const int64_t chunks = (size + kChunk - 1) / kChunk;
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(chunks, cost_per_chunk, [&](int64_t begin, int64_t end) {
    alignas(64) uint16_t halves[kChunk];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      if (st) ChunkHalves(*st, chunk, halves);
      const int64_t first = chunk * kChunk;
      work(first, std::min(kChunk, size - first), st ? halves : nullptr);
    }
  });
}

// False (with an error on ctx) unless `seed` has shape (2,).
inline bool CheckSeed(OpKernelContext* ctx, const Tensor& seed) {
  if (seed.dims() == 1 && seed.NumElements() == 2) return true;
  ctx->SetStatus(tensorflow::errors::InvalidArgument("seed must have shape (2,), got ",
                                                     seed.shape().DebugString()));
  return false;
}

// The shape function's check of the same: input `i` (the seed) is a vector of 2.
inline tensorflow::Status SeedShape(tensorflow::shape_inference::InferenceContext* c, int i) {
  tensorflow::shape_inference::ShapeHandle seed;
  tensorflow::shape_inference::DimensionHandle two;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &seed));
  return c->WithValue(c->Dim(seed, 0), 2, &two);
}

}  // namespace eanet

#endif  // EANET_DROPOUT_STREAM_H_
