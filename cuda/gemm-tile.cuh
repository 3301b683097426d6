// GEMM tile machinery shared by gemm.cu (av_linear) and conv.cu (implicit-GEMM conv2d). Not an
// op entry point: internal templates only.
//
// Problem, per batch item z:  out(r, n) = sum_k X(r, k) * W(n, k),  r < M (X rows), n < N (W rows)
//   X: f32 activations, either dense rows (x_dense) or gathered from an NCHW image on the fly
//      (x_im2col, the implicit GEMM of a convolution: r = output pixel, k = (ci, ky, kx)).
//   W: weights [N, K], f16 / bf16 (tensor-core kernel) or f32 (SIMT kernel).
//   Epilogue (gemm_epi): v = act(out + bias[n]); v *= gate[(r / rpg), n]; v += res; y = v, with
//   y addressed as y[z*y_bs + r*ys_r + n*ys_n], so the same kernel writes a linear's
//   row-major [M, N] (ys_r = N, ys_n = 1) and a conv's channel-major [Cout, P] (ys_r = 1,
//   ys_n = P).
//
// Tensor-core kernel (gemm_tc_kernel): block tile BM x BN x 32, warps WM x WN, each warp
//   (BM/WM) x (BN/WN) with mma.sync m16n8k16 (f32 accumulate). Shared tiles are stored
//   k-contiguous with rows padded to 40 halves (80 bytes), which makes the 8 row addresses of
//   every ldmatrix phase fall in distinct 16-byte bank groups (conflict-free). Two stages:
//   while the tensor cores work on stage s, the W tile of k-step t+1 streams into stage s^1 by
//   cp.async (16-byte, zero-filled past the edges) and the X tile of t+1 is loaded into
//   registers; after the math the X registers are converted (round to nearest even) to the
//   weights' 16-bit type and stored. One barrier per k-step. X is converted to bf16 for bf16
//   weights and to f16 for f16 weights (PyTorch's fp16 autocast does the same).
//   Grid: (ceil(N/BN), ceil(M/BM), batch): consecutive blocks share an X row-tile, which stays
//   in L2 while the W tiles stream.
// SIMT kernel (gemm_simt_kernel, f32 weights): 64 x 64 x 16 tile, 256 threads, 4 x 4 outputs
//   per thread, exact fp32 (the correctness path for f32 checkpoints; convert weights to bf16
//   at load time for speed).
//
// References: CUTLASS / "How to optimize a CUDA matmul" (Simon Boehm) for the tiling; PTX ISA
//   for ldmatrix and the m16n8k16 fragment layouts (common.cuh); llm.c dev/cuda/matmul_forward.
#pragma once

#include "common.cuh"

namespace av_gemm {

constexpr int BK = 32;       // k-step of the tensor-core kernel
constexpr int LDS = BK + 8;  // padded smem row (halves)

// ---- epilogue ------------------------------------------------------------------------------

struct gemm_epi {
    float* y = nullptr;
    int64_t y_bs = 0, ys_r = 0, ys_n = 0;  // batch, X-row and W-row strides of y (and res)
    const float* bias = nullptr;           // [N]
    const float* gate = nullptr;           // [G, N]
    int64_t gate_G = 1, rpg = 1;
    const float* res = nullptr;  // indexed like y; may alias y
    int act = AV_ACT_NONE;
    int64_t M = 0, N = 0;
    bool pair_ok = false;  // ys_n == 1 and y/res 8-byte aligned with even strides: float2 stores

    __device__ __forceinline__ float finish(float acc, int64_t r, int64_t n, int64_t off) const {
        float v = acc;
        if (bias) v += bias[n];
        v = av_apply_act(v, act);
        if (gate) {
            int64_t g = r / rpg;
            if (g >= gate_G) g = gate_G - 1;
            v *= gate[g * N + n];
        }
        if (res) v += res[off];
        return v;
    }

    // Stores out(r, n) of batch item z.
    __device__ __forceinline__ void store1(int z, int64_t r, int64_t n, float a) const {
        if (r >= M || n >= N) return;
        const int64_t off = z * y_bs + r * ys_r + n * ys_n;
        y[off] = finish(a, r, n, off);
    }

    // Stores out(r, n) and out(r, n + 1) of batch item z.
    __device__ __forceinline__ void store2(int z, int64_t r, int64_t n, float a, float b) const {
        if (r >= M || n >= N) return;
        const int64_t off = z * y_bs + r * ys_r + n * ys_n;
        if (pair_ok && n + 1 < N) {
            float2 v = make_float2(finish(a, r, n, off), finish(b, r, n + 1, off + 1));
            *reinterpret_cast<float2*>(y + off) = v;
            return;
        }
        y[off] = finish(a, r, n, off);
        if (n + 1 < N) y[off + ys_n] = finish(b, r, n + 1, off + ys_n);
    }
};

// ---- X operands ----------------------------------------------------------------------------

// Dense f32 rows: X(r, k) = x[z*bs + r*ld + k].
struct x_dense {
    const float* x = nullptr;
    int64_t bs = 0, ld = 0, M = 0, K = 0;
    bool vec = false;  // K % 4 == 0, ld % 4 == 0 and x 16-byte aligned: float4 loads

    __device__ __forceinline__ float at(int z, int64_t r, int64_t k) const {
        return (r < M && k < K) ? x[z * bs + r * ld + k] : 0.0f;
    }

    // Tensor-core tile loader. Thread t loads XV float4 groups: row (t / 8) + i * (NT / 8),
    // columns (t % 8) * 4 .. + 3 of the BK = 32 wide tile (8 threads read one 128-byte row).
    template <int BM, int NT>
    struct tile {
        static constexpr int XV = BM * BK / 4 / NT;
        float v[XV][4];
        const float* base = nullptr;
        int64_t r0 = 0;

        __device__ __forceinline__ void begin(const x_dense& X, int z, int64_t r0_) {
            base = X.x + z * X.bs;
            r0 = r0_;
        }
        __device__ __forceinline__ void load(const x_dense& X, int64_t k0) {
            const int tid = threadIdx.x;
            const int64_t k = k0 + (tid % 8) * 4;
#pragma unroll
            for (int i = 0; i < XV; ++i) {
                const int64_t r = r0 + tid / 8 + i * (NT / 8);
                if (X.vec) {
                    float4 f = make_float4(0.f, 0.f, 0.f, 0.f);
                    if (r < X.M && k < X.K) f = *reinterpret_cast<const float4*>(base + r * X.ld + k);
                    v[i][0] = f.x;
                    v[i][1] = f.y;
                    v[i][2] = f.z;
                    v[i][3] = f.w;
                } else {
#pragma unroll
                    for (int j = 0; j < 4; ++j) v[i][j] = (r < X.M && k + j < X.K) ? base[r * X.ld + k + j] : 0.0f;
                }
            }
        }
        template <typename T>
        __device__ __forceinline__ void store(uint16_t* As) const {
            const int tid = threadIdx.x;
#pragma unroll
            for (int i = 0; i < XV; ++i) {
                const int row = tid / 8 + i * (NT / 8);
                uint2 u;
                u.x = av_pack2<T>(v[i][0], v[i][1]);
                u.y = av_pack2<T>(v[i][2], v[i][3]);
                *reinterpret_cast<uint2*>(As + row * LDS + (tid % 8) * 4) = u;
            }
        }
    };
};

// Implicit im2col of one NCHW image: r = oy*Wo + ox, k = (ci*kh + ky)*kw + kx;
// X(r, k) = x[z][ci][oy*stride - pad_t + ky*dil][ox*stride - pad_l + kx*dil], 0 outside.
struct x_im2col {
    const float* x = nullptr;
    int64_t bs = 0;  // Cin*H*W
    int Cin = 0, H = 0, W = 0, Ho = 0, Wo = 0, kh = 1, kw = 1, stride = 1, pad_t = 0, pad_l = 0, dil = 1;
    int64_t M = 0, K = 0;  // M = Ho*Wo, K = Cin*kh*kw

    __device__ __forceinline__ float at(int z, int64_t r, int64_t k) const {
        if (r >= M || k >= K) return 0.0f;
        const int oy = static_cast<int>(r / Wo), ox = static_cast<int>(r % Wo);
        const int khw = kh * kw;
        const int ci = static_cast<int>(k / khw), rem = static_cast<int>(k % khw);
        const int iy = oy * stride - pad_t + (rem / kw) * dil, ix = ox * stride - pad_l + (rem % kw) * dil;
        if (iy < 0 || iy >= H || ix < 0 || ix >= W) return 0.0f;
        return x[z * bs + (static_cast<int64_t>(ci) * H + iy) * W + ix];
    }

    // Tensor-core tile loader. Consecutive threads take consecutive output pixels (coalesced
    // along a row of the image for stride 1); thread t owns row t % BM and KPT consecutive k
    // starting at (t / BM) * KPT, decomposed into (ci, ky, kx) once per tile and then stepped.
    template <int BM, int NT>
    struct tile {
        static constexpr int KG = NT / BM;
        static constexpr int KPT = BK / KG;
        static_assert(KPT % 8 == 0, "im2col tile: each thread stores whole 16-byte groups");
        float v[KPT];
        const float* base = nullptr;
        int iy0 = 0, ix0 = 0;
        bool row_ok = false;

        __device__ __forceinline__ void begin(const x_im2col& X, int z, int64_t r0) {
            base = X.x + z * X.bs;
            const int64_t r = r0 + threadIdx.x % BM;
            row_ok = r < X.M;
            const int oy = row_ok ? static_cast<int>(r / X.Wo) : 0, ox = row_ok ? static_cast<int>(r % X.Wo) : 0;
            iy0 = oy * X.stride - X.pad_t;
            ix0 = ox * X.stride - X.pad_l;
        }
        __device__ __forceinline__ void load(const x_im2col& X, int64_t k0) {
            int64_t k = k0 + (threadIdx.x / BM) * KPT;
            const int khw = X.kh * X.kw;
            int ci = static_cast<int>(k / khw), rem = static_cast<int>(k % khw);
            int ky = rem / X.kw, kx = rem % X.kw;
#pragma unroll
            for (int j = 0; j < KPT; ++j) {
                float f = 0.0f;
                const int iy = iy0 + ky * X.dil, ix = ix0 + kx * X.dil;
                if (row_ok && k + j < X.K && iy >= 0 && iy < X.H && ix >= 0 && ix < X.W)
                    f = base[(static_cast<int64_t>(ci) * X.H + iy) * X.W + ix];
                v[j] = f;
                if (++kx == X.kw) {
                    kx = 0;
                    if (++ky == X.kh) {
                        ky = 0;
                        ++ci;
                    }
                }
            }
        }
        template <typename T>
        __device__ __forceinline__ void store(uint16_t* As) const {
            const int row = threadIdx.x % BM, kofs = (threadIdx.x / BM) * KPT;
#pragma unroll
            for (int j = 0; j < KPT; j += 8) {
                uint4 u;
                u.x = av_pack2<T>(v[j + 0], v[j + 1]);
                u.y = av_pack2<T>(v[j + 2], v[j + 3]);
                u.z = av_pack2<T>(v[j + 4], v[j + 5]);
                u.w = av_pack2<T>(v[j + 6], v[j + 7]);
                *reinterpret_cast<uint4*>(As + row * LDS + kofs + j) = u;
            }
        }
    };
};

// ---- W operand (16-bit weights) --------------------------------------------------------------

// W(n, k) = w[z*bs + n*K + k], 16-bit. Thread t moves WV 16-byte groups: row c / 4, halves
// (c % 4) * 8 .. + 7 of the tile, c = t + i * NT. With `async` (K % 8 == 0, 16-byte aligned)
// cp.async copies straight to shared memory; otherwise the group is gathered element by
// element into registers (load) and stored after the math (store).
template <int BN, int NT>
struct w_tile {
    static constexpr int WV = BN * BK / 8 / NT;
    static_assert(WV >= 1, "W tile smaller than one 16-byte group per thread");
    uint4 v[WV];
    const uint16_t* base = nullptr;
    int64_t n0 = 0, N = 0, K = 0;
    bool async = false;

    __device__ __forceinline__ void begin(const uint16_t* w, int64_t bs, int z, int64_t n0_, int64_t N_, int64_t K_,
                                          bool async_) {
        base = w + z * bs;
        n0 = n0_;
        N = N_;
        K = K_;
        async = async_;
    }
    // async: issues the copies (caller commits); sync: loads into registers.
    __device__ __forceinline__ void load(uint16_t* Bs, int64_t k0) {
#pragma unroll
        for (int i = 0; i < WV; ++i) {
            const int c = threadIdx.x + i * NT;
            const int row = c / 4, kc = (c % 4) * 8;
            const int64_t n = n0 + row, k = k0 + kc;
            if (async) {
                const bool ok = n < N && k < K;
                av_cp_async16(Bs + row * LDS + kc, ok ? base + n * K + k : base, ok ? 16 : 0);
            } else {
                uint16_t h[8];
#pragma unroll
                for (int j = 0; j < 8; ++j) h[j] = (n < N && k + j < K) ? base[n * K + k + j] : uint16_t(0);
                v[i].x = h[0] | (uint32_t(h[1]) << 16);
                v[i].y = h[2] | (uint32_t(h[3]) << 16);
                v[i].z = h[4] | (uint32_t(h[5]) << 16);
                v[i].w = h[6] | (uint32_t(h[7]) << 16);
            }
        }
    }
    __device__ __forceinline__ void store(uint16_t* Bs) const {
        if (async) return;
#pragma unroll
        for (int i = 0; i < WV; ++i) {
            const int c = threadIdx.x + i * NT;
            *reinterpret_cast<uint4*>(Bs + (c / 4) * LDS + (c % 4) * 8) = v[i];
        }
    }
};

// ---- tensor-core kernel ----------------------------------------------------------------------

// T: __nv_bfloat16 or __half (the weights' type, and the type X is rounded to).
template <typename T, int BM, int BN, int WM, int WN, typename XOP>
__global__ void __launch_bounds__(WM * WN * WARP_SIZE)
    gemm_tc_kernel(XOP X, const uint16_t* __restrict__ w, int64_t w_bs, bool w_async, int64_t K, gemm_epi ep) {
    constexpr int NT = WM * WN * WARP_SIZE;
    constexpr int WTM = BM / WM, WTN = BN / WN;
    constexpr int MI = WTM / 16, NI = WTN / 8;
    static_assert(MI >= 1 && NI >= 2 && NI % 2 == 0, "warp tile must be 16k x 16k'");
    __shared__ __align__(128) uint16_t As[2][BM * LDS];
    __shared__ __align__(128) uint16_t Bs[2][BN * LDS];

    const int z = blockIdx.z;
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * BM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * BN;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int wm = warp / WN, wn = warp % WN;

    typename XOP::template tile<BM, NT> xt;
    w_tile<BN, NT> wt;
    xt.begin(X, z, r0);
    wt.begin(w, w_bs, z, n0, ep.N, K, w_async);

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    const int64_t KT = ceil_div<int64_t>(K, BK);
    // Prologue: stage 0.
    wt.load(Bs[0], 0);
    av_cp_async_commit();
    xt.load(X, 0);
    xt.template store<T>(As[0]);
    wt.store(Bs[0]);
    av_cp_async_wait<0>();
    __syncthreads();

    for (int64_t kt = 0; kt < KT; ++kt) {
        const int cur = static_cast<int>(kt & 1), nxt = cur ^ 1;
        const bool more = kt + 1 < KT;
        if (more) {
            wt.load(Bs[nxt], (kt + 1) * BK);
            av_cp_async_commit();
            xt.load(X, (kt + 1) * BK);
        }
        const uint16_t* as = As[cur];
        const uint16_t* bs = Bs[cur];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t a[MI][4], b[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                av_ldmatrix_x4(a[mi], as + (wm * WTM + mi * 16 + lane % 16) * LDS + kk + (lane / 16) * 8);
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                uint32_t q[4];
                // matrix lane/8: n rows ((lane/8)/2)*8 + lane%8, k offset ((lane/8)%2)*8
                av_ldmatrix_x4(q, bs + (wn * WTN + nj * 16 + ((lane / 8) / 2) * 8 + lane % 8) * LDS + kk +
                                      ((lane / 8) % 2) * 8);
                b[2 * nj][0] = q[0];
                b[2 * nj][1] = q[1];
                b[2 * nj + 1][0] = q[2];
                b[2 * nj + 1][1] = q[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) av_mma_16816<T>(acc[mi][ni], a[mi], b[ni]);
        }
        if (more) {
            xt.template store<T>(As[nxt]);
            wt.store(Bs[nxt]);
            av_cp_async_wait<0>();
        }
        __syncthreads();
    }

    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int64_t r = r0 + wm * WTM + mi * 16 + g;
            const int64_t n = n0 + wn * WTN + ni * 8 + 2 * t;
            ep.store2(z, r, n, acc[mi][ni][0], acc[mi][ni][1]);
            ep.store2(z, r + 8, n, acc[mi][ni][2], acc[mi][ni][3]);
        }
}

// ---- SIMT kernel (f32 weights) ---------------------------------------------------------------

constexpr int S_BM = 64, S_BN = 64, S_BK = 16, S_NT = 256;

// Thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 i and columns tx + 16 j (i, j < 4):
// strided ownership keeps the smem reads of a warp to 2 broadcast rows and 16 consecutive
// columns (conflict-free).
template <typename XOP>
__global__ void __launch_bounds__(S_NT)
    gemm_simt_kernel(XOP X, const float* __restrict__ w, int64_t w_bs, int64_t K, gemm_epi ep) {
    __shared__ float As[S_BK][S_BM + 4];
    __shared__ float Bs[S_BK][S_BN + 4];
    const int z = blockIdx.z;
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * S_BM;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * S_BN;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const float* wb = w + z * w_bs;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += S_BK) {
#pragma unroll
        for (int i = 0; i < S_BM * S_BK / S_NT; ++i) {
            const int e = tid + i * S_NT;
            // X: consecutive threads walk rows (coalesced for im2col; dense rows are L1-cached).
            const int rr = e % S_BM, kk = e / S_BM;
            As[kk][rr] = X.at(z, r0 + rr, k0 + kk);
            // W: consecutive threads walk k (coalesced 64-byte runs per row).
            const int nn = e / S_BK, kw = e % S_BK;
            const int64_t n = n0 + nn, k = k0 + kw;
            Bs[kw][nn] = (n < ep.N && k < K) ? wb[n * K + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < S_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t r = r0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (r < ep.M && n < ep.N) {
                const int64_t off = z * ep.y_bs + r * ep.ys_r + n * ep.ys_n;
                ep.y[off] = ep.finish(acc[i][j], r, n, off);
            }
        }
}

// ---- launcher --------------------------------------------------------------------------------

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Picks the tile configuration and launches. w points at `wtype` weights [batch_w][N][K]
// (w_bs = 0 for shared weights). Large problems get 128 x 128 tiles (8 warps); problems that
// would not fill the GPU with those, or whose N would leave a 128-wide tile mostly empty, get
// 64 x 64 (4 warps).
template <typename XOP>
av_status gemm_launch(const XOP& X, const void* w, av_dtype wtype, int64_t w_bs, int64_t K, int batch,
                      const gemm_epi& ep, const av_cuda_ctx& ctx, const char* what) {
    if (ep.M == 0 || ep.N == 0) return av_status::success();
    AV_CHECK(batch <= 65535, std::string(what) + ": batch above 65535");
    if (wtype == AV_F32) {
        const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(ep.N, S_BN)),
                        static_cast<unsigned>(ceil_div<int64_t>(ep.M, S_BM)), batch);
        AV_CHECK(grid.y <= 65535, std::string(what) + ": too many rows");
        gemm_simt_kernel<XOP><<<grid, S_NT, 0, ctx.stream>>>(X, static_cast<const float*>(w), w_bs, K, ep);
        CUDA_CHECK_LAUNCH(what);
        return av_status::success();
    }
    const bool w_async = K % 8 == 0 && aligned16(w) && w_bs % 8 == 0;
    const uint16_t* wh = static_cast<const uint16_t*>(w);
    const int64_t big_blocks = ceil_div<int64_t>(ep.N, 128) * ceil_div<int64_t>(ep.M, 128) * batch;
    // Padding waste along N (e.g. the decoder's 160 channels: 256/160 with 128-wide tiles,
    // 192/160 with 64-wide ones): prefer the small tile when the big one wastes 25% more.
    const double pad128 = static_cast<double>(ceil_div<int64_t>(ep.N, 128) * 128) / static_cast<double>(ep.N);
    const double pad64 = static_cast<double>(ceil_div<int64_t>(ep.N, 64) * 64) / static_cast<double>(ep.N);
    const bool big = big_blocks >= ctx.sm_count && pad128 <= 1.25 * pad64;
    auto go = [&](auto tag) -> av_status {
        using T = decltype(tag);
        if (big) {
            const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(ep.N, 128)),
                            static_cast<unsigned>(ceil_div<int64_t>(ep.M, 128)), batch);
            AV_CHECK(grid.y <= 65535, std::string(what) + ": too many rows");
            gemm_tc_kernel<T, 128, 128, 2, 4, XOP><<<grid, 256, 0, ctx.stream>>>(X, wh, w_bs, w_async, K, ep);
        } else {
            const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(ep.N, 64)),
                            static_cast<unsigned>(ceil_div<int64_t>(ep.M, 64)), batch);
            AV_CHECK(grid.y <= 65535, std::string(what) + ": too many rows");
            gemm_tc_kernel<T, 64, 64, 2, 2, XOP><<<grid, 128, 0, ctx.stream>>>(X, wh, w_bs, w_async, K, ep);
        }
        CUDA_CHECK_LAUNCH(what);
        return av_status::success();
    };
    if (wtype == AV_BF16) return go(__nv_bfloat16());
    return go(__half());
}

}  // namespace av_gemm
