// Elementwise ops of core/ops.h: modulate, binary, unary, softmax and the strided dtype copy.
//
// Algorithm and grid mapping:
// - modulate / binary / unary: one thread per 4 consecutive elements (float4 when the row
//   length is a multiple of 4, scalar otherwise), grid-stride over the flattened [M, N] tensor;
//   the broadcast row of the second operand is computed from the element's row. Memory bound:
//   one read of each input and one write, no re-reads (the broadcast rows stay in L1/L2).
// - softmax: one block per row (rows are up to V = 4096 wide), three passes over the row
//   held in global memory (max, sum of exp, write); the row is re-read from L1/L2. fp32
//   throughout; -inf entries give 0 and a row of -inf gives zeros (max = -inf is special-cased
//   so that no inf - inf = NaN appears).
// - copy: one thread per output element in row-major order; the source offset is rebuilt from
//   the 4-D index and the byte strides nb[] (any view, e.g. a permute), with dtype conversion
//   f32 <-> f16 / bf16 (round to nearest even, as core/tensor.h's host conversions) or a raw
//   copy when the dtypes match.
//
// Reference: native/cpu/elementwise.cc (same semantics; plain loops).
#include "core/ops-check.h"
#include "elementwise.cuh"

namespace {

// ---- modulate --------------------------------------------------------------------------------

// y = x * (1 + scale[g]) + shift[g], g = m / rows_per_group.  x, y [M, C]; scale/shift [G, C].
template <bool VEC4>
__global__ void modulate_kernel(const float* __restrict__ x, const float* __restrict__ scale,
                                const float* __restrict__ shift, float* y, int64_t M, int64_t C, int64_t G,
                                int64_t rpg) {
    const int64_t n4 = VEC4 ? M * C / 4 : M * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        if constexpr (VEC4) {
            const int64_t e = i * 4, m = e / C, c = e % C;
            int64_t g = m / rpg;
            if (g >= G) g = G - 1;
            float4 v = reinterpret_cast<const float4*>(x)[i];
            float4 s = scale ? *reinterpret_cast<const float4*>(scale + g * C + c) : make_float4(0, 0, 0, 0);
            float4 b = shift ? *reinterpret_cast<const float4*>(shift + g * C + c) : make_float4(0, 0, 0, 0);
            v.x = v.x * (1.0f + s.x) + b.x;
            v.y = v.y * (1.0f + s.y) + b.y;
            v.z = v.z * (1.0f + s.z) + b.z;
            v.w = v.w * (1.0f + s.w) + b.w;
            reinterpret_cast<float4*>(y)[i] = v;
        } else {
            const int64_t m = i / C, c = i % C;
            int64_t g = m / rpg;
            if (g >= G) g = G - 1;
            const float s = scale ? scale[g * C + c] : 0.0f;
            const float b = shift ? shift[g * C + c] : 0.0f;
            y[i] = x[i] * (1.0f + s) + b;
        }
    }
}

av_status launch_modulate(const float* x, const float* scale, const float* shift, float* y, int64_t M, int64_t C,
                          int64_t G, int64_t rpg, cudaStream_t stream) {
    auto a16 = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15) == 0; };
    const bool vec4 = C % 4 == 0 && a16(x) && a16(y) && a16(scale) && a16(shift);
    const int threads = 256;
    const unsigned blocks = av_grid_1d(vec4 ? M * C / 4 : M * C, threads);
    BOOL_SWITCH(vec4, V4, [&] { modulate_kernel<V4><<<blocks, threads, 0, stream>>>(x, scale, shift, y, M, C, G, rpg); });
    CUDA_CHECK_LAUNCH("modulate");
    return av_status::success();
}

// ---- binary ----------------------------------------------------------------------------------

// a, y [M, N]; b [Mb, Nb] with Nb in {N, 1}; row m of a uses row (m / b_div) % Mb of b.
template <int KIND, bool B_SCALAR>
__global__ void binary_kernel(const float* __restrict__ a, const float* __restrict__ b, float* y, int64_t M,
                              int64_t N, int64_t Mb, int64_t b_div, float alpha, float beta) {
    const int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / N, c = i % N;
        const int64_t mb = (m / b_div) % Mb;
        const float bv = B_SCALAR ? b[mb] : b[mb * N + c];
        const float av = a[i];
        if constexpr (KIND == AV_BIN_ADD)
            y[i] = av + alpha * bv;
        else
            y[i] = av * (beta + alpha * bv);
    }
}

av_status launch_binary(const float* a, const float* b, float* y, int64_t M, int64_t N, int64_t Mb, bool b_scalar,
                        int64_t b_div, int kind, float alpha, float beta, cudaStream_t stream) {
    const int threads = 256;
    const unsigned blocks = av_grid_1d(M * N, threads);
    BOOL_SWITCH(b_scalar, BS, [&] {
        if (kind == AV_BIN_ADD)
            binary_kernel<AV_BIN_ADD, BS><<<blocks, threads, 0, stream>>>(a, b, y, M, N, Mb, b_div, alpha, beta);
        else
            binary_kernel<AV_BIN_MUL, BS><<<blocks, threads, 0, stream>>>(a, b, y, M, N, Mb, b_div, alpha, beta);
    });
    CUDA_CHECK_LAUNCH("binary");
    return av_status::success();
}

// ---- unary -----------------------------------------------------------------------------------

__global__ void unary_kernel(const float* __restrict__ x, float* y, int64_t n, int act) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = av_apply_act(x[i], act);
}

av_status launch_unary(const float* x, float* y, int64_t n, int act, cudaStream_t stream) {
    const int threads = 256;
    unary_kernel<<<av_grid_1d(n, threads), threads, 0, stream>>>(x, y, n, act);
    CUDA_CHECK_LAUNCH("unary");
    return av_status::success();
}

// ---- softmax ---------------------------------------------------------------------------------

// scale * x, keeping -inf as -inf whatever the scale (0 * -inf would be NaN), as the CPU does.
__device__ __forceinline__ float softmax_in(float v, float scale) { return v == -INFINITY ? -INFINITY : scale * v; }

// One block per row: y = softmax(scale * x) over N entries.
__global__ void softmax_kernel(const float* x, float* y, int64_t N, float scale) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    const float* xr = x + row * N;
    float* yr = y + row * N;
    float mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < N; c += blockDim.x) mx = fmaxf(mx, softmax_in(xr[c], scale));
    mx = block_reduce_max(mx, red);
    if (mx == -INFINITY) {  // every entry is -inf: zeros, not NaN
        __syncthreads();     // all reads of the row are done before anyone writes (in place)
        for (int64_t c = threadIdx.x; c < N; c += blockDim.x) yr[c] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < N; c += blockDim.x) sum += expf(softmax_in(xr[c], scale) - mx);
    sum = block_reduce_sum(sum, red);
    const float inv = 1.0f / sum;
    // In place is safe: each element is read and then written by the same thread.
    for (int64_t c = threadIdx.x; c < N; c += blockDim.x) yr[c] = expf(softmax_in(xr[c], scale) - mx) * inv;
}

av_status launch_softmax(const float* x, float* y, int64_t M, int64_t N, float scale, cudaStream_t stream) {
    AV_CHECK(M <= 2147483647LL, "softmax: more than 2^31 rows");
    const int threads = N >= 1024 ? 512 : (N >= 256 ? 256 : 64);
    softmax_kernel<<<static_cast<unsigned>(M), threads, 0, stream>>>(x, y, N, scale);
    CUDA_CHECK_LAUNCH("softmax");
    return av_status::success();
}

// ---- copy ------------------------------------------------------------------------------------

struct copy_shape {
    int64_t ne[4];
    int64_t nb[4];  // source byte strides
};

__device__ __forceinline__ float copy_read(const char* p, int t) {
    switch (t) {
        case AV_F16: return __half2float(*reinterpret_cast<const __half*>(p));
        case AV_BF16: return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
        default: return *reinterpret_cast<const float*>(p);
    }
}

__device__ __forceinline__ void copy_write(char* p, int t, float v) {
    switch (t) {
        case AV_F16: *reinterpret_cast<__half*>(p) = __float2half_rn(v); break;
        case AV_BF16: *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v); break;
        default: *reinterpret_cast<float*>(p) = v; break;
    }
}

// ELEM > 0: same dtype, raw copy of ELEM-byte elements; ELEM == 0: convert via f32.
template <int ELEM>
__global__ void copy_kernel(const char* __restrict__ x, char* __restrict__ y, copy_shape s, int64_t n, int xt,
                            int yt, int ysize) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        // Output is contiguous: i = ((i3*ne2 + i2)*ne1 + i1)*ne0 + i0.
        int64_t r = i;
        const int64_t i0 = r % s.ne[0];
        r /= s.ne[0];
        const int64_t i1 = r % s.ne[1];
        r /= s.ne[1];
        const int64_t i2 = r % s.ne[2];
        const int64_t i3 = r / s.ne[2];
        const char* src = x + i0 * s.nb[0] + i1 * s.nb[1] + i2 * s.nb[2] + i3 * s.nb[3];
        if constexpr (ELEM == 4)
            reinterpret_cast<uint32_t*>(y)[i] = *reinterpret_cast<const uint32_t*>(src);
        else if constexpr (ELEM == 2)
            reinterpret_cast<uint16_t*>(y)[i] = *reinterpret_cast<const uint16_t*>(src);
        else if constexpr (ELEM == 1)
            reinterpret_cast<uint8_t*>(y)[i] = *reinterpret_cast<const uint8_t*>(src);
        else
            copy_write(y + i * ysize, yt, copy_read(src, xt));
    }
}

av_status launch_copy(const av_tensor& x, const av_tensor& y, cudaStream_t stream) {
    copy_shape s;
    for (int d = 0; d < 4; ++d) {
        s.ne[d] = x.ne[d];
        s.nb[d] = x.nb[d];
    }
    const int64_t n = av_tensor_nelements(x);
    if (n == 0) return av_status::success();
    const int threads = 256;
    const unsigned blocks = av_grid_1d(n, threads);
    const char* xp = static_cast<const char*>(x.data);
    char* yp = static_cast<char*>(y.data);
    const int ysize = static_cast<int>(av_dtype_size(y.dtype));
    if (x.dtype == y.dtype) {
        switch (ysize) {
            case 4: copy_kernel<4><<<blocks, threads, 0, stream>>>(xp, yp, s, n, x.dtype, y.dtype, ysize); break;
            case 2: copy_kernel<2><<<blocks, threads, 0, stream>>>(xp, yp, s, n, x.dtype, y.dtype, ysize); break;
            default: copy_kernel<1><<<blocks, threads, 0, stream>>>(xp, yp, s, n, x.dtype, y.dtype, ysize); break;
        }
    } else {
        copy_kernel<0><<<blocks, threads, 0, stream>>>(xp, yp, s, n, x.dtype, y.dtype, ysize);
    }
    CUDA_CHECK_LAUNCH("copy");
    return av_status::success();
}

}  // namespace

av_status av_cuda_modulate(const av_modulate_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_modulate(p));
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const int64_t rpg = p.rows_per_group;
    const int64_t G = (M + rpg - 1) / rpg;
    if (M * C == 0) return av_status::success();
    return launch_modulate(static_cast<const float*>(p.x.data), static_cast<const float*>(p.scale.data),
                           static_cast<const float*>(p.shift.data), static_cast<float*>(p.y.data), M, C, G, rpg,
                           ctx.stream);
}

av_status av_cuda_binary(const av_binary_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_binary(p));
    const int64_t N = p.a.ne[0];
    const int64_t M = av_tensor_nelements(p.a) / N;
    const int64_t Nb = p.b.ne[0];
    const int64_t Mb = av_tensor_nelements(p.b) / Nb;
    if (M * N == 0) return av_status::success();
    return launch_binary(static_cast<const float*>(p.a.data), static_cast<const float*>(p.b.data),
                         static_cast<float*>(p.y.data), M, N, Mb, Nb == 1 && N != 1, p.b_div, p.kind, p.alpha, p.beta,
                         ctx.stream);
}

av_status av_cuda_unary(const av_unary_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_unary(p));
    const int64_t n = av_tensor_nelements(p.x);
    if (n == 0) return av_status::success();
    return launch_unary(static_cast<const float*>(p.x.data), static_cast<float*>(p.y.data), n, p.act, ctx.stream);
}

av_status av_cuda_softmax(const av_softmax_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_softmax(p));
    const int64_t N = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / N;
    if (M * N == 0) return av_status::success();
    return launch_softmax(static_cast<const float*>(p.x.data), static_cast<float*>(p.y.data), M, N, p.scale,
                          ctx.stream);
}

av_status av_cuda_copy(const av_copy_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_copy(p));
    return launch_copy(p.x, p.y, ctx.stream);
}
