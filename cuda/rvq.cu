// VQ codebook gather and nearest-code search (spec 5.1, 7.3).
//
// vq_lookup: one thread per output element, consecutive threads on consecutive output
//   addresses (channel-major: along t within a channel plane; token-major: along the channel
//   of a token), so writes are coalesced; codebook rows are gathered (the codebook, 4096 x 32,
//   stays in L2). An index outside [0, V) cannot be reported from the kernel: its outputs are
//   written as 0 and the first offending (token, index) is kept in the device error record,
//   which the backend's next synchronize() turns into an AV_ERR_INVALID status worded like the
//   CPU's check (which runs before anything is written).
//   Bytes: B*T*Cv*4 written + the same gathered from L2.
// vq_nearest: argmin_v sum_c (z_c - E_vc)^2 summed in double in channel order with explicitly
//   rounded multiplies and adds (__dmul_rn / __dadd_rn, no FMA contraction): the same
//   arithmetic as native/cpu/rvq.cc, so distances are bit-identical and equal distances keep
//   the lowest index on both backends. Grid: ceil(B*T / 8) blocks of 8 warps, one token per
//   warp; the block stages the codebook through shared memory in chunks of 128 codes (rows
//   padded to Cv + 1 floats: conflict-free), lane l scores codes l, l + 32, ... of each chunk
//   (ascending, strict < keeps the first), then a warp argmin with ties to the lower index.
//   Work: B*T*V*Cv double multiply-adds (134 M for a 32x32 map at V = 4096, Cv = 32).
#include "core/ops-check.h"
#include "rvq.cuh"

namespace {

template <typename TW>
__global__ void vq_lookup_kernel(const int32_t* __restrict__ idx, const TW* __restrict__ cb, float* __restrict__ y,
                                 int64_t B, int64_t T, int64_t Cv, int64_t V, bool cm, av_cuda_err_rec* err) {
    const int64_t n = B * T * Cv;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, t, c;
        if (cm) {  // y [B, Cv, T]
            t = e % T;
            c = (e / T) % Cv;
            b = e / (T * Cv);
        } else {  // y [B, T, Cv]
            c = e % Cv;
            t = (e / Cv) % T;
            b = e / (T * Cv);
        }
        const int32_t v = idx[b * T + t];
        float val = 0.0f;
        if (v >= 0 && v < V)
            val = av_to_f32(cb[static_cast<int64_t>(v) * Cv + c]);
        else {
            err->vq_V = static_cast<int>(V);
            err->vq_T = T;
            atomicMin(&err->vq_first, (static_cast<unsigned long long>(b * T + t) << 32) | static_cast<uint32_t>(v));
            atomicOr(&err->flags, AV_CUDA_ERR_VQ_INDEX);
        }
        y[e] = val;
    }
}

constexpr int NN_WARPS = 8, NN_CHUNK = 128;

// Dynamic smem: E chunk [NN_CHUNK][Cv + 1] floats, then z [NN_WARPS][Cv] doubles.
template <typename TW>
__global__ void __launch_bounds__(NN_WARPS* WARP_SIZE)
    vq_nearest_kernel(const float* __restrict__ z, const TW* __restrict__ cb, int32_t* __restrict__ idx, int64_t B,
                      int64_t T, int Cv, int64_t V, bool cm) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int ldE = Cv + 1;
    double* zs = reinterpret_cast<double*>(smem);
    float* Es = reinterpret_cast<float*>(smem + sizeof(double) * NN_WARPS * Cv);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int64_t tok = static_cast<int64_t>(blockIdx.x) * NN_WARPS + warp;  // b*T + t
    const bool active = tok < B * T;
    if (active) {
        const int64_t b = tok / T, t = tok % T;
        for (int c = lane; c < Cv; c += WARP_SIZE)
            zs[warp * Cv + c] = static_cast<double>(cm ? z[(b * Cv + c) * T + t] : z[tok * Cv + c]);
    }
    double best_d = 0.0;
    int64_t best_v = -1;
    for (int64_t v0 = 0; v0 < V; v0 += NN_CHUNK) {
        const int nc = V - v0 < NN_CHUNK ? static_cast<int>(V - v0) : NN_CHUNK;
        __syncthreads();  // previous chunk consumed (and z staged on the first pass)
        for (int e = threadIdx.x; e < nc * Cv; e += blockDim.x)
            Es[(e / Cv) * ldE + e % Cv] = av_to_f32(cb[(v0 + e / Cv) * Cv + e % Cv]);
        __syncthreads();
        if (!active) continue;
        for (int j = lane; j < nc; j += WARP_SIZE) {
            const float* er = Es + j * ldE;
            const double* zr = zs + warp * Cv;
            double d = 0.0;
            for (int c = 0; c < Cv; ++c) {
                const double diff = __dsub_rn(zr[c], static_cast<double>(er[c]));
                d = __dadd_rn(d, __dmul_rn(diff, diff));
            }
            if (best_v < 0 || d < best_d) {
                best_d = d;
                best_v = v0 + j;
            }
        }
    }
    if (!active) return;
    // Warp argmin; lanes without a candidate (V < 32) carry v = -1 and never win.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const double od = __shfl_xor_sync(0xffffffffu, best_d, o);
        const long long ov = __shfl_xor_sync(0xffffffffu, static_cast<long long>(best_v), o);
        const bool take = ov >= 0 && (best_v < 0 || od < best_d || (od == best_d && ov < best_v));
        if (take) {
            best_d = od;
            best_v = ov;
        }
    }
    if (lane == 0) idx[tok] = static_cast<int32_t>(best_v < 0 ? 0 : best_v);
}

template <typename F>
void with_wtype(av_dtype t, F&& f) {
    switch (t) {
        case AV_F16: f(__half()); break;
        case AV_BF16: f(__nv_bfloat16()); break;
        default: f(float()); break;
    }
}

}  // namespace

av_status av_cuda_vq_lookup(const av_vq_lookup_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_vq_lookup(p));
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0], V = p.codebook.ne[1];
    const bool cm = p.channel_major != 0;
    const int64_t n = B * T * Cv;
    if (n == 0) return av_status::success();
    const int threads = 256;
    with_wtype(p.codebook.dtype, [&](auto tag) {
        using TW = decltype(tag);
        vq_lookup_kernel<TW><<<av_grid_1d(n, threads), threads, 0, ctx.stream>>>(
            static_cast<const int32_t*>(p.idx.data), static_cast<const TW*>(p.codebook.data),
            static_cast<float*>(p.y.data), B, T, Cv, V, cm, ctx.err);
    });
    CUDA_CHECK_LAUNCH("vq_lookup");
    return av_status::success();
}

av_status av_cuda_vq_nearest(const av_vq_nearest_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_vq_nearest(p));
    // Stricter than the shared check: the kernel needs a non-empty z.
    AV_CHECK(av_is_f32c(p.z), "vq_nearest: z must be contiguous f32");
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0], V = p.codebook.ne[1];
    const bool cm = p.channel_major != 0;
    const int64_t ntok = B * T;
    if (ntok == 0) return av_status::success();
    const size_t smem = sizeof(double) * NN_WARPS * Cv + sizeof(float) * NN_CHUNK * (Cv + 1);
    AV_CHECK(smem <= ctx.smem_optin, "vq_nearest: Cv = " + std::to_string(Cv) + " is too large for shared memory");
    AV_CHECK(ceil_div<int64_t>(ntok, NN_WARPS) <= 2147483647LL, "vq_nearest: too many tokens");
    av_status st = av_status::success();
    with_wtype(p.codebook.dtype, [&](auto tag) {
        using TW = decltype(tag);
        auto kern = vq_nearest_kernel<TW>;
        if (smem > 48 * 1024) {
            cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
            if (e != cudaSuccess) {
                st = av_status::error(AV_ERR_BACKEND, std::string("vq_nearest: ") + cudaGetErrorString(e));
                return;
            }
        }
        kern<<<static_cast<unsigned>(ceil_div<int64_t>(ntok, NN_WARPS)), NN_WARPS * WARP_SIZE, smem, ctx.stream>>>(
            static_cast<const float*>(p.z.data), static_cast<const TW*>(p.codebook.data),
            static_cast<int32_t*>(p.idx.data), B, T, static_cast<int>(Cv), V, cm);
    });
    AV_TRY(st);
    CUDA_CHECK_LAUNCH("vq_nearest");
    return av_status::success();
}
