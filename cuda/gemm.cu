// av_linear: y = res + gate * act(x W^T + bias), x [batch, M, K] f32, W [batch_w, N, K].
//
// Paths, chosen per call in av_cuda_linear:
// - skinny (M <= 16, 16-bit weights, K % 8 == 0): weight-bandwidth bound (the transformer at
//   scales 1-2 and the head's single row at scale 0). The weights never touch shared memory:
//   each warp streams 16 weight rows straight from global memory into mma A fragments with
//   16-byte loads and takes x (<= 16 rows, L1/L2 resident) as the B operand. The k order inside
//   a 32-wide chunk is permuted identically for both operands (a dot product does not care):
//   lane (g, t) reads halves 8t..8t+7 of rows g and g+8, which are the A fragments of two
//   m16n8k16 steps, and x[m = g][8t..8t+7] gives the matching B fragments. Grid:
//   (ceil(N / 16), batch); the block's 8 warps split K (chunk c goes to warp c % 8, four
//   chunks in flight per warp) and their partial sums are added in shared memory, in a fixed
//   order (deterministic), before the epilogue.
// - tiled tensor-core kernel (gemm-tile.cuh) for everything else with f16/bf16 weights.
// - SIMT fp32 kernel (gemm-tile.cuh) for f32 weights.
// Bytes moved (skinny): N*K*2 of weights once + x from L2; FLOPs are irrelevant there.
//
// Reference: native/cpu/gemm.cc. Semantics of gate: row m of batch item z uses gate row
// m / rows_per_group (the gate is shared by the batch items).
#include "core/ops-check.h"
#include "gemm-tile.cuh"
#include "gemm.cuh"

namespace {

using av_gemm::gemm_epi;

constexpr int SK_WARPS = 8;
constexpr int SK_UNROLL = 4;

template <typename T, int MT>
__global__ void __launch_bounds__(SK_WARPS* WARP_SIZE)
    gemm_skinny_kernel(const float* __restrict__ x, int64_t x_bs, const uint16_t* __restrict__ w, int64_t w_bs,
                       int64_t K, gemm_epi ep) {
    __shared__ float red[SK_WARPS][16 * 16];  // [warp][m_local * 16 + n_local]
    const int z = blockIdx.y;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * 16;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int g = lane / 4, t = lane % 4;

    const bool ok0 = n0 + g < ep.N, ok1 = n0 + g + 8 < ep.N;
    const uint16_t* w0 = w + z * w_bs + (ok0 ? (n0 + g) * K : 0);
    const uint16_t* w1 = w + z * w_bs + (ok1 ? (n0 + g + 8) * K : 0);
    const float* xr[MT];
    bool okx[MT];
#pragma unroll
    for (int j = 0; j < MT; ++j) {
        okx[j] = j * 8 + g < ep.M;
        xr[j] = x + z * x_bs + (okx[j] ? (j * 8 + g) * K : 0);
    }

    float acc[MT][4];
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;

    const int64_t nchunks = ceil_div<int64_t>(K, 32);
    for (int64_t c0 = warp; c0 < nchunks; c0 += SK_WARPS * SK_UNROLL) {
        uint4 wa[SK_UNROLL], wb[SK_UNROLL];
        float4 xa[SK_UNROLL][MT], xb[SK_UNROLL][MT];
        // All loads of the unrolled chunks first, so that 4 x (2 + 2 MT) 16-byte loads per
        // lane are in flight before the first mma.
#pragma unroll
        for (int u = 0; u < SK_UNROLL; ++u) {
            const int64_t k = (c0 + u * SK_WARPS) * 32 + 8 * t;
            const bool kin = k < K;
            const uint4 zero4 = make_uint4(0, 0, 0, 0);
            wa[u] = (ok0 && kin) ? __ldg(reinterpret_cast<const uint4*>(w0 + k)) : zero4;
            wb[u] = (ok1 && kin) ? __ldg(reinterpret_cast<const uint4*>(w1 + k)) : zero4;
#pragma unroll
            for (int j = 0; j < MT; ++j) {
                const bool ok = okx[j] && kin;
                xa[u][j] = ok ? *reinterpret_cast<const float4*>(xr[j] + k) : make_float4(0.f, 0.f, 0.f, 0.f);
                xb[u][j] = ok ? *reinterpret_cast<const float4*>(xr[j] + k + 4) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
#pragma unroll
        for (int u = 0; u < SK_UNROLL; ++u) {
            // A fragments of the two k16 steps: halves 8t..8t+3 and 8t+4..8t+7 of rows g, g+8.
            const uint32_t a1[4] = {wa[u].x, wb[u].x, wa[u].y, wb[u].y};
            const uint32_t a2[4] = {wa[u].z, wb[u].z, wa[u].w, wb[u].w};
#pragma unroll
            for (int j = 0; j < MT; ++j) {
                const uint32_t b1[2] = {av_pack2<T>(xa[u][j].x, xa[u][j].y), av_pack2<T>(xa[u][j].z, xa[u][j].w)};
                const uint32_t b2[2] = {av_pack2<T>(xb[u][j].x, xb[u][j].y), av_pack2<T>(xb[u][j].z, xb[u][j].w)};
                av_mma_16816<T>(acc[j], a1, b1);
                av_mma_16816<T>(acc[j], a2, b2);
            }
        }
    }

    // D fragment: acc[j][0..1] = (n g, m j*8 + 2t, +1), acc[j][2..3] = (n g + 8, same m).
#pragma unroll
    for (int j = 0; j < MT; ++j) {
        const int m = j * 8 + 2 * t;
        red[warp][m * 16 + g] = acc[j][0];
        red[warp][(m + 1) * 16 + g] = acc[j][1];
        red[warp][m * 16 + g + 8] = acc[j][2];
        red[warp][(m + 1) * 16 + g + 8] = acc[j][3];
    }
    __syncthreads();
    const int ml = threadIdx.x / 16, nl = threadIdx.x % 16;
    if (ml < MT * 8) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < SK_WARPS; ++i) s += red[i][ml * 16 + nl];
        ep.store1(z, ml, n0 + nl, s);
    }
}

av_status launch_skinny(const float* x, int64_t x_bs, const void* w, av_dtype wtype, int64_t w_bs, int64_t K,
                        int batch, const gemm_epi& ep, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(ep.N, 16)), batch);
    const uint16_t* wh = static_cast<const uint16_t*>(w);
    const bool two = ep.M > 8;
    auto go = [&](auto tag) {
        using T = decltype(tag);
        if (two)
            gemm_skinny_kernel<T, 2><<<grid, SK_WARPS * WARP_SIZE, 0, stream>>>(x, x_bs, wh, w_bs, K, ep);
        else
            gemm_skinny_kernel<T, 1><<<grid, SK_WARPS * WARP_SIZE, 0, stream>>>(x, x_bs, wh, w_bs, K, ep);
    };
    if (wtype == AV_BF16)
        go(__nv_bfloat16());
    else
        go(__half());
    CUDA_CHECK_LAUNCH("linear (skinny)");
    return av_status::success();
}

}  // namespace

av_status av_cuda_linear(const av_linear_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_linear(p));
    const int64_t K = p.x.ne[0], M = p.x.ne[1], batch = p.x.ne[2] * p.x.ne[3];
    const int64_t N = p.w.ne[1], batch_w = p.w.ne[2] * p.w.ne[3];

    gemm_epi ep;
    ep.y = static_cast<float*>(p.y.data);
    ep.y_bs = M * N;
    ep.ys_r = N;
    ep.ys_n = 1;
    ep.M = M;
    ep.N = N;
    ep.act = p.act;
    if (av_tensor_present(p.bias)) ep.bias = static_cast<const float*>(p.bias.data);
    if (av_tensor_present(p.gate)) {
        ep.gate = static_cast<const float*>(p.gate.data);
        ep.gate_G = p.gate.ne[1];
        ep.rpg = p.rows_per_group;
    }
    if (av_tensor_present(p.res)) ep.res = static_cast<const float*>(p.res.data);
    auto a8 = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 7) == 0; };
    ep.pair_ok = N % 2 == 0 && a8(ep.y) && (ep.res == nullptr || a8(ep.res));
    if (M == 0 || N == 0 || batch == 0) return av_status::success();
    AV_CHECK(batch <= 65535, "linear: batch above 65535");
    const int64_t w_bs = batch_w == 1 ? 0 : N * K;
    const float* x = static_cast<const float*>(p.x.data);

    if (K == 0) {
        // Empty reduction: y = res + gate * act(bias); run the fp32 kernel with no k-steps.
        av_gemm::x_dense X;
        X.x = x;
        X.M = M;
        return av_gemm::gemm_launch(X, p.w.data, AV_F32, 0, 0, static_cast<int>(batch), ep, ctx, "linear");
    }
    const bool w16 = p.w.dtype != AV_F32;
    if (w16 && M <= 16 && K % 8 == 0 && av_gemm::aligned16(p.w.data) && av_gemm::aligned16(x))
        return launch_skinny(x, M * K, p.w.data, p.w.dtype, w_bs, K, static_cast<int>(batch), ep, ctx.stream);

    av_gemm::x_dense X;
    X.x = x;
    X.bs = M * K;
    X.ld = K;
    X.M = M;
    X.K = K;
    X.vec = K % 4 == 0 && av_gemm::aligned16(x);
    return av_gemm::gemm_launch(X, p.w.data, p.w.dtype, w_bs, K, static_cast<int>(batch), ep, ctx, "linear");
}
