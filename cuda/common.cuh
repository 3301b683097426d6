// Shared helpers of the CUDA backend: error checks that return av_status (nothing here aborts),
// the per-call context every op entry point receives, warp reductions, ceil_div, BOOL_SWITCH,
// dtype conversion of weight operands, and the small PTX wrappers (cp.async, ldmatrix,
// mma.sync) used by the tensor-core kernels of gemm.cu, conv.cu and attn.cu.
//
// References: llama.cpp ggml/src/ggml-cuda/common.cuh (CUDA_CHECK, warp reductions);
// flash-attention csrc/flash_attn/src/static_switch.h (BOOL_SWITCH); PTX ISA 8.x, sections
// "cp.async", "ldmatrix" and "mma.sync.aligned.m16n8k16" for the fragment layouts.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "core/ops.h"
#include "core/status.h"
#include "core/tensor.h"

#define WARP_SIZE 32

// Returns an AV_ERR_BACKEND status naming the failed call and the CUDA error string.
#define CUDA_CHECK(call)                                                                                 \
    do {                                                                                                 \
        cudaError_t av_cuda_err_ = (call);                                                               \
        if (av_cuda_err_ != cudaSuccess)                                                                 \
            return av_status::error(AV_ERR_BACKEND, std::string("cuda: ") + #call + " failed: " +         \
                                                        cudaGetErrorName(av_cuda_err_) + " (" +           \
                                                        cudaGetErrorString(av_cuda_err_) + ")");          \
    } while (0)

// Checks the launch that just happened (configuration errors surface here; faults in the
// kernel surface at the next synchronising call).
#define CUDA_CHECK_LAUNCH(what)                                                                          \
    do {                                                                                                 \
        cudaError_t av_cuda_err_ = cudaGetLastError();                                                   \
        if (av_cuda_err_ != cudaSuccess)                                                                 \
            return av_status::error(AV_ERR_BACKEND, std::string("cuda: launching ") + (what) +            \
                                                        " failed: " + cudaGetErrorName(av_cuda_err_) +    \
                                                        " (" + cudaGetErrorString(av_cuda_err_) + ")");   \
    } while (0)

// Runs one body with a compile-time bool; see flash-attention's static_switch.h.
#define BOOL_SWITCH(cond, NAME, ...)               \
    [&] {                                          \
        if (cond) {                                \
            constexpr static bool NAME = true;     \
            return __VA_ARGS__();                  \
        } else {                                   \
            constexpr static bool NAME = false;    \
            return __VA_ARGS__();                  \
        }                                          \
    }()

// Device-side error record (av_cuda_ctx::err). Kernels cannot return a status, so an
// invariant that only the device can see (an index read from device memory) sets a bit and
// its details here; the backend reports it, with the CPU backend's wording, at the next
// synchronize() and resets the record.
enum av_cuda_err_bits : int {
    AV_CUDA_ERR_VQ_INDEX = 1,  // vq_lookup: an index outside [0, V); its output was written as 0
};

struct av_cuda_err_rec {
    int flags = 0;
    int vq_V = 0;
    long long vq_T = 1;
    // min over offending tokens of (token << 32 | uint32(index)): the first one in order.
    unsigned long long vq_first = ~0ULL;
};

// What every op entry point receives from the backend.
struct av_cuda_ctx {
    cudaStream_t stream = nullptr;
    int device = 0;
    int sm_count = 1;
    int cc_major = 8, cc_minor = 0;
    size_t smem_optin = 48 * 1024;  // largest dynamic shared memory a block may opt in to
    av_cuda_err_rec* err = nullptr;  // device error record
    // Stream-ordered scratch memory, valid until the next get_scratch call on this backend
    // (compute calls are serialised, and everything runs on `stream`).
    av_status (*get_scratch)(void* self, size_t bytes, void** out) = nullptr;
    void* self = nullptr;

    av_status scratch(size_t bytes, void** out) const { return get_scratch(self, bytes, out); }
};

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
    return (a + b - 1) / b;
}

// ---- reductions ------------------------------------------------------------------------------

__device__ __forceinline__ float warp_reduce_sum(float x) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_reduce_max(float x) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

__device__ __forceinline__ double warp_reduce_sum(double x) {
#pragma unroll
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). `red` is shared scratch
// of 32 floats. Every thread gets the result. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_reduce_sum(float x, float* red) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    x = warp_reduce_sum(x);
    __syncthreads();  // `red` may still be read by a previous call
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = lane < nwarps ? red[lane] : 0.0f;
    return warp_reduce_sum(x);
}

__device__ __forceinline__ float block_reduce_max(float x, float* red) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    x = warp_reduce_max(x);
    __syncthreads();
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = lane < nwarps ? red[lane] : -INFINITY;
    return warp_reduce_max(x);
}

// ---- activations (ops.h av_act) --------------------------------------------------------------

__device__ __forceinline__ float av_apply_act(float x, int act) {
    switch (act) {
        case AV_ACT_GELU_TANH: {
            const float k0 = 0.7978845608028654f;  // sqrt(2/pi)
            return 0.5f * x * (1.0f + tanhf(k0 * (x + 0.044715f * x * x * x)));
        }
        case AV_ACT_SILU: return x / (1.0f + expf(-x));
        case AV_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
        default: return x;
    }
}

// ---- weight dtypes ---------------------------------------------------------------------------

__device__ __forceinline__ float av_to_f32(float x) { return x; }
__device__ __forceinline__ float av_to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float av_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// Reads element i of a weight array of runtime dtype t (f32, f16 or bf16) as f32.
__device__ __forceinline__ float av_load_w(const void* base, av_dtype t, int64_t i) {
    switch (t) {
        case AV_F16: return __half2float(static_cast<const __half*>(base)[i]);
        case AV_BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
        default: return static_cast<const float*>(base)[i];
    }
}

// Packs two f32 into the 32-bit register of a 16-bit pair (low half = a), rounding to nearest
// even, as the mma operand type T (__nv_bfloat16 or __half) expects.
template <typename T>
__device__ __forceinline__ uint32_t av_pack2(float a, float b);

template <>
__device__ __forceinline__ uint32_t av_pack2<__nv_bfloat16>(float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
}

template <>
__device__ __forceinline__ uint32_t av_pack2<__half>(float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
}

// ---- PTX wrappers (sm_80+) -------------------------------------------------------------------

__device__ __forceinline__ uint32_t av_smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses registers; src_bytes < 16 zero-fills the rest
// (0 reads nothing, so an out-of-range source may be any valid address).
__device__ __forceinline__ void av_cp_async16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(av_smem_u32(smem)), "l"(gmem),
                 "r"(src_bytes));
}

__device__ __forceinline__ void av_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void av_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices; lane l supplies the row address of matrix l/8, row l%8.
__device__ __forceinline__ void av_ldmatrix_x4(uint32_t r[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(av_smem_u32(smem)));
}

__device__ __forceinline__ void av_ldmatrix_x2(uint32_t r[2], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(av_smem_u32(smem)));
}

// Transposing variant: the 8x8 matrices are read column-major (B operands stored k-major).
__device__ __forceinline__ void av_ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(av_smem_u32(smem)));
}

// D = A B + D, m16n8k16, f32 accumulate. Fragment layout (g = lane/4, t = lane%4):
// a[0]: (row g, k 2t..2t+1), a[1]: (g+8, 2t), a[2]: (g, 2t+8), a[3]: (g+8, 2t+8);
// b[0]: (k 2t..2t+1, col g), b[1]: (k 2t+8.., col g); d[0..1]: (g, 2t..2t+1), d[2..3]: (g+8, 2t..).
template <typename T>
__device__ __forceinline__ void av_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2]);

template <>
__device__ __forceinline__ void av_mma_16816<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void av_mma_16816<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- host-side checks shared by the op files -------------------------------------------------

// Invariant checks mirror native/cpu/*.cc word for word: the parity suites run their rejection
// cases on every backend and match the CPU's messages.
// A present (non-null), non-empty, contiguous tensor of dtype dt (an absent operand has
// data == nullptr and would otherwise pass as a contiguous 1x1x1x1 view).
inline bool av_is_contig(const av_tensor& t, av_dtype dt) {
    if (t.data == nullptr || t.dtype != dt) return false;
    for (int i = 0; i < 4; ++i)
        if (t.ne[i] < 1) return false;
    return av_tensor_is_contiguous(t);
}

inline bool av_is_f32c(const av_tensor& t) { return av_is_contig(t, AV_F32); }

inline bool av_same_ne(const av_tensor& a, const av_tensor& b) {
    return a.ne[0] == b.ne[0] && a.ne[1] == b.ne[1] && a.ne[2] == b.ne[2] && a.ne[3] == b.ne[3];
}

inline bool av_overlaps(const void* a, size_t na, const void* b, size_t nb) {
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + nb && pb < pa + na;
}

inline bool av_overlaps(const av_tensor& a, const av_tensor& b) {
    return av_overlaps(a.data, av_tensor_nbytes(a), b.data, av_tensor_nbytes(b));
}

// y may be x itself (in place) or disjoint from it.
inline bool av_alias_ok(const av_tensor& y, const av_tensor& x) { return y.data == x.data || !av_overlaps(y, x); }

// An optional per-channel vector: absent, or contiguous f32 with exactly C elements.
inline bool av_vec_ok(const av_tensor& t, int64_t C) {
    return !av_tensor_present(t) || (av_is_f32c(t) && t.ne[0] == C && av_tensor_nelements(t) == C);
}

inline bool av_is_weight_dtype(av_dtype t) { return t == AV_F32 || t == AV_F16 || t == AV_BF16; }

inline std::string av_shape_str(const av_tensor& t) {
    return "[" + std::to_string(t.ne[3]) + ", " + std::to_string(t.ne[2]) + ", " + std::to_string(t.ne[1]) + ", " +
           std::to_string(t.ne[0]) + "]";
}

// Grid-size helper: blocks for n items at `per_block` items each, capped for grid-stride loops.
inline unsigned av_grid_1d(int64_t n, int per_block, int64_t cap = 65535LL * 32) {
    int64_t b = ceil_div<int64_t>(n, per_block);
    if (b < 1) b = 1;
    if (b > cap) b = cap;
    return static_cast<unsigned>(b);
}
