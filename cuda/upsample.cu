// Resampling (spec 2.1, 5.5) and the VQ residual accumulation of one scale (spec 5.4).
//
// Both ops take their per-axis taps from core/resample-weights.h, the header the CPU backend
// uses, and accumulate in the CPU's order with explicitly rounded multiplies and adds
// (__fmul_rn / __fadd_rn: no FMA contraction), so results agree with native/cpu/upsample.cc to
// the bit (up to libm differences inside Pillow's double weights, which are computed by the
// same code).
//
// resample: three launches. (1) taps: one thread per output index of each axis fills
//   (count, indices, weights) exactly like the CPU's build_taps (in == out is the identity in
//   every mode). (2) horizontal pass x [P, H, W] -> tmp [P, H, Wo], one thread per output
//   (consecutive threads on consecutive columns). (3) vertical pass tmp -> y [P, Ho, Wo].
//   Scratch: the tap tables and tmp (P*H*Wo floats).
// upsample_accum: one fused kernel, grid (Cv, B), one block per output plane (b, co):
//   - bicubic_up of the h planes it needs into shared memory (all Cv input planes when Phi is
//     applied, in chunks that fit; only plane co otherwise), horizontal then vertical like
//     the CPU;
//   - Phi: acc = sum over ci, ky, kx (in that order, zero padding skipped) of
//     w[co, ci, ky, kx] * t[ci], then f_hat += t*(1 - r) + (acc + b)*r; without Phi, f_hat += t;
//   - area_down of the new plane to pn_next x pn_next, written token-major into next
//     [B, pn^2, Cv] (each output recomputes its window's row sums, in the CPU's order).
//   The bicubic of the Cv input planes is recomputed by each of the Cv blocks of an image
//   (Cv x 32x32x16 FMAs, negligible) so that nothing round-trips through global memory; the
//   only DRAM traffic is h, f_hat read + written, the weights and next.
//
// Reference: native/cpu/upsample.cc; PyTorch interpolate (bicubic, area); Pillow Resample.c.
#include "core/ops-check.h"
#include "core/resample-weights.h"
#include "upsample.cuh"

namespace {

// ---- taps ------------------------------------------------------------------------------------

int64_t taps_max(int mode, int64_t in, int64_t out) {
    switch (mode) {
        case AV_RESAMPLE_BICUBIC: return 4;
        case AV_RESAMPLE_AREA: return av_area_max_taps(in, out);
        case AV_RESAMPLE_NEAREST: return 1;
        default: return av_pil_max_taps(in, out);
    }
}

// Taps of output o, as native/cpu/upsample.cc build_taps. Returns the count.
__device__ int taps_entry(int mode, int64_t o, int64_t in, int64_t out, int64_t* idx, float* w) {
    if (in == out) {
        idx[0] = o;
        w[0] = 1.0f;
        return 1;
    }
    switch (mode) {
        case AV_RESAMPLE_BICUBIC: av_bicubic_taps(o, in, out, idx, w); return 4;
        case AV_RESAMPLE_AREA: {
            int64_t b, e;
            av_area_window(o, in, out, &b, &e);
            for (int64_t j = b; j < e; ++j) {
                idx[j - b] = j;
                w[j - b] = 1.0f / static_cast<float>(e - b);
            }
            return static_cast<int>(e - b);
        }
        case AV_RESAMPLE_NEAREST:
            idx[0] = av_nearest_index(o, in, out);
            w[0] = 1.0f;
            return 1;
        default: {
            int64_t b;
            const int64_t n = av_pil_bicubic_taps(o, in, out, &b, w);
            for (int64_t k = 0; k < n; ++k) idx[k] = b + k;
            return static_cast<int>(n);
        }
    }
}

struct axis_tab {
    int32_t* n;
    int32_t* idx;
    float* w;
    int K;
};

__global__ void taps_kernel(int mode, int64_t in, int64_t out, axis_tab t) {
    const int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (o >= out) return;
    int64_t idx64[64];  // K <= 64 is checked on the host
    const int n = taps_entry(mode, o, in, out, idx64, t.w + o * t.K);
    t.n[o] = n;
    for (int k = 0; k < n; ++k) t.idx[o * t.K + k] = static_cast<int32_t>(idx64[k]);
}

// tmp[(r)*Wo + o] = sum_k x[r*W + idx_k] * w_k over rows r < rows.
__global__ void resample_rows_kernel(const float* __restrict__ x, float* __restrict__ tmp, int64_t rows, int64_t W,
                                     int64_t Wo, axis_tab tx) {
    const int64_t n = rows * Wo;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / Wo, o = e % Wo;
        const float* xr = x + r * W;
        const int32_t* idx = tx.idx + o * tx.K;
        const float* w = tx.w + o * tx.K;
        float acc = __fmul_rn(xr[idx[0]], w[0]);
        for (int k = 1; k < tx.n[o]; ++k) acc = __fadd_rn(acc, __fmul_rn(xr[idx[k]], w[k]));
        tmp[e] = acc;
    }
}

// y[(p*Ho + o)*Wo + c] = sum_k tmp[(p*H + idx_k)*Wo + c] * w_k.
__global__ void resample_cols_kernel(const float* __restrict__ tmp, float* __restrict__ y, int64_t P, int64_t H,
                                     int64_t Ho, int64_t Wo, axis_tab ty) {
    const int64_t n = P * Ho * Wo;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = e % Wo, o = (e / Wo) % Ho, p = e / (Wo * Ho);
        const int32_t* idx = ty.idx + o * ty.K;
        const float* w = ty.w + o * ty.K;
        const float* base = tmp + p * H * Wo + c;
        float acc = __fmul_rn(base[static_cast<int64_t>(idx[0]) * Wo], w[0]);
        for (int k = 1; k < ty.n[o]; ++k) acc = __fadd_rn(acc, __fmul_rn(base[static_cast<int64_t>(idx[k]) * Wo], w[k]));
        y[e] = acc;
    }
}

size_t align16(size_t b) { return (b + 15) / 16 * 16; }

av_status launch_resample(int mode, const float* x, float* y, int64_t P, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                          const av_cuda_ctx& ctx) {
    const int64_t Kx = W == Wo ? 1 : taps_max(mode, W, Wo), Ky = H == Ho ? 1 : taps_max(mode, H, Ho);
    AV_CHECK(Kx <= 64 && Ky <= 64, "resample: downscale factor too large (more than 64 taps per output)");
    const size_t bx = align16(sizeof(int32_t) * Wo) + align16(sizeof(int32_t) * Wo * Kx) + align16(sizeof(float) * Wo * Kx);
    const size_t by = align16(sizeof(int32_t) * Ho) + align16(sizeof(int32_t) * Ho * Ky) + align16(sizeof(float) * Ho * Ky);
    const size_t bt = sizeof(float) * static_cast<size_t>(P * H * Wo);
    void* s = nullptr;
    AV_TRY(ctx.scratch(bx + by + bt, &s));
    auto carve = [](unsigned char*& p, size_t bytes) {
        void* r = p;
        p += align16(bytes);
        return r;
    };
    unsigned char* cur = static_cast<unsigned char*>(s);
    axis_tab tx{static_cast<int32_t*>(carve(cur, sizeof(int32_t) * Wo)),
                static_cast<int32_t*>(carve(cur, sizeof(int32_t) * Wo * Kx)),
                static_cast<float*>(carve(cur, sizeof(float) * Wo * Kx)), static_cast<int>(Kx)};
    axis_tab ty{static_cast<int32_t*>(carve(cur, sizeof(int32_t) * Ho)),
                static_cast<int32_t*>(carve(cur, sizeof(int32_t) * Ho * Ky)),
                static_cast<float*>(carve(cur, sizeof(float) * Ho * Ky)), static_cast<int>(Ky)};
    float* tmp = reinterpret_cast<float*>(cur);
    taps_kernel<<<av_grid_1d(Wo, 128), 128, 0, ctx.stream>>>(mode, W, Wo, tx);
    taps_kernel<<<av_grid_1d(Ho, 128), 128, 0, ctx.stream>>>(mode, H, Ho, ty);
    CUDA_CHECK_LAUNCH("resample (taps)");
    resample_rows_kernel<<<av_grid_1d(P * H * Wo, 256), 256, 0, ctx.stream>>>(x, tmp, P * H, W, Wo, tx);
    CUDA_CHECK_LAUNCH("resample (rows)");
    resample_cols_kernel<<<av_grid_1d(P * Ho * Wo, 256), 256, 0, ctx.stream>>>(tmp, y, P, H, Ho, Wo, ty);
    CUDA_CHECK_LAUNCH("resample (columns)");
    return av_status::success();
}

// ---- upsample_accum --------------------------------------------------------------------------

constexpr int UA_NT = 256;
constexpr int UA_MAXP = 16;  // output positions per thread: Gh*Gw <= 4096

// Bicubic taps with the identity for in == out (as build_taps).
__device__ __forceinline__ int bicubic_tap(int64_t o, int64_t in, int64_t out, int64_t idx[4], float w[4]) {
    if (in == out) {
        idx[0] = o;
        w[0] = 1.0f;
        return 1;
    }
    av_bicubic_taps(o, in, out, idx, w);
    return 4;
}

// bicubic_up of one plane src [ph, pw] -> dst [Gh, Gw] through hb [ph, Gw] (shared).
// Contains barriers: all threads call it.
__device__ void bicubic_plane(const float* __restrict__ src, float* hb, float* dst, int ph, int pw, int Gh, int Gw) {
    for (int e = threadIdx.x; e < ph * Gw; e += blockDim.x) {
        const int y = e / Gw, ox = e % Gw;
        int64_t idx[4];
        float w[4];
        const int n = bicubic_tap(ox, pw, Gw, idx, w);
        float acc = __fmul_rn(src[y * pw + idx[0]], w[0]);
        for (int k = 1; k < n; ++k) acc = __fadd_rn(acc, __fmul_rn(src[y * pw + idx[k]], w[k]));
        hb[e] = acc;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < Gh * Gw; e += blockDim.x) {
        const int oy = e / Gw, ox = e % Gw;
        int64_t idx[4];
        float w[4];
        const int n = bicubic_tap(oy, ph, Gh, idx, w);
        float acc = __fmul_rn(hb[idx[0] * Gw + ox], w[0]);
        for (int k = 1; k < n; ++k) acc = __fadd_rn(acc, __fmul_rn(hb[idx[k] * Gw + ox], w[k]));
        dst[e] = acc;
    }
    __syncthreads();
}

// Dynamic smem: hb [ph*Gw], tt [chunk*Gh*Gw], wl [Cv*9] floats.
template <typename TW>
__global__ void __launch_bounds__(UA_NT)
    upsample_accum_kernel(const float* __restrict__ h, const TW* __restrict__ phi_w, const float* __restrict__ phi_b,
                          float* f_hat, float* __restrict__ next, int Cv, int ph, int pw, int Gh, int Gw, int pn,
                          int chunk, float ratio) {
    extern __shared__ float sm[];
    const int co = blockIdx.x, b = blockIdx.y;
    const int S = Gh * Gw;
    float* hb = sm;
    float* tt = hb + ph * Gw;
    float* wl = tt + chunk * S;
    const bool phi = phi_w != nullptr;
    const float* hbase = h + static_cast<int64_t>(b) * Cv * ph * pw;
    if (phi)
        for (int e = threadIdx.x; e < Cv * 9; e += blockDim.x) wl[e] = av_to_f32(phi_w[static_cast<int64_t>(co) * Cv * 9 + e]);

    float acc[UA_MAXP], tco[UA_MAXP];
#pragma unroll
    for (int i = 0; i < UA_MAXP; ++i) acc[i] = tco[i] = 0.0f;

    const int c_begin = phi ? 0 : co, c_end = phi ? Cv : co + 1;
    for (int c0 = c_begin; c0 < c_end; c0 += chunk) {
        const int nc = c_end - c0 < chunk ? c_end - c0 : chunk;
        for (int c = 0; c < nc; ++c)
            bicubic_plane(hbase + static_cast<int64_t>(c0 + c) * ph * pw, hb, tt + c * S, ph, pw, Gh, Gw);
#pragma unroll
        for (int i = 0; i < UA_MAXP; ++i) {
            const int pidx = threadIdx.x + i * UA_NT;
            if (pidx >= S) break;
            if (co >= c0 && co < c0 + nc) tco[i] = tt[(co - c0) * S + pidx];
            if (!phi) continue;
            const int y = pidx / Gw, x = pidx % Gw;
            float a = acc[i];
            for (int c = 0; c < nc; ++c) {
                const float* src = tt + c * S;
                const float* wk = wl + (c0 + c) * 9;
                for (int ky = 0; ky < 3; ++ky) {
                    const int sy = y + ky - 1;
                    if (sy < 0 || sy >= Gh) continue;
                    for (int kx = 0; kx < 3; ++kx) {
                        const int sx = x + kx - 1;
                        if (sx < 0 || sx >= Gw) continue;
                        a = __fadd_rn(a, __fmul_rn(wk[ky * 3 + kx], src[sy * Gw + sx]));
                    }
                }
            }
            acc[i] = a;
        }
        __syncthreads();  // tt is overwritten by the next chunk
    }

    float* fp = f_hat + (static_cast<int64_t>(b) * Cv + co) * S;
    const float bv = (phi && phi_b) ? phi_b[co] : 0.0f;
    const float keep = 1.0f - ratio;
#pragma unroll
    for (int i = 0; i < UA_MAXP; ++i) {
        const int pidx = threadIdx.x + i * UA_NT;
        if (pidx >= S) break;
        const float f = fp[pidx];
        if (phi)
            fp[pidx] = __fadd_rn(f, __fadd_rn(__fmul_rn(tco[i], keep), __fmul_rn(__fadd_rn(acc[i], bv), ratio)));
        else
            fp[pidx] = __fadd_rn(f, tco[i]);
    }
    if (next == nullptr) return;
    __syncthreads();  // this block's f_hat plane is complete and visible to the block

    // next[b, oy*pn + ox, co] = area_down(f_hat plane): rows summed first, then columns.
    for (int l = threadIdx.x; l < pn * pn; l += blockDim.x) {
        const int oy = l / pn, ox = l % pn;
        int64_t xb, xe, yb, ye;
        av_area_window(ox, Gw, pn, &xb, &xe);
        av_area_window(oy, Gh, pn, &yb, &ye);
        const float wx = 1.0f / static_cast<float>(xe - xb), wy = 1.0f / static_cast<float>(ye - yb);
        float out = 0.0f;
        for (int64_t y = yb; y < ye; ++y) {
            const float* row = fp + y * Gw;
            float rs = __fmul_rn(row[xb], wx);
            for (int64_t x = xb + 1; x < xe; ++x) rs = __fadd_rn(rs, __fmul_rn(row[x], wx));
            out = y == yb ? __fmul_rn(rs, wy) : __fadd_rn(out, __fmul_rn(rs, wy));
        }
        next[(static_cast<int64_t>(b) * pn * pn + l) * Cv + co] = out;
    }
}

}  // namespace

av_status av_cuda_resample(const av_resample_params& p, const av_cuda_ctx& ctx) {
    // Stricter than the shared check: an empty x or y is not contiguous here (av_is_f32c).
    if (av_tensor_present(p.x) && av_tensor_present(p.y))
        AV_CHECK(av_is_f32c(p.x) && av_is_f32c(p.y), "resample: x and y must be contiguous f32");
    AV_TRY(av_check_resample(p));
    const int64_t P = p.x.ne[2] * p.x.ne[3];
    const int64_t H = p.x.ne[1], W = p.x.ne[0], Ho = p.y.ne[1], Wo = p.y.ne[0];
    AV_CHECK(H < (1LL << 31) && W < (1LL << 31) && Ho < (1LL << 31) && Wo < (1LL << 31), "resample: too large");
    return launch_resample(p.mode, static_cast<const float*>(p.x.data), static_cast<float*>(p.y.data), P, H, W, Ho, Wo,
                           ctx);
}

av_status av_cuda_upsample_accum(const av_upsample_accum_params& p, const av_cuda_ctx& ctx) {
    // Stricter than the shared check: an empty h or f_hat is not contiguous here (av_is_f32c).
    if (av_tensor_present(p.h) && av_tensor_present(p.f_hat))
        AV_CHECK(av_is_f32c(p.h) && av_is_f32c(p.f_hat), "upsample_accum: h and f_hat must be contiguous f32");
    AV_TRY(av_check_upsample_accum(p));
    // h [B, Cv, ph, pw]; f_hat [B, Cv, Gh, Gw]
    const int64_t B = p.f_hat.ne[3], Cv = p.f_hat.ne[2], Gh = p.f_hat.ne[1], Gw = p.f_hat.ne[0];
    const int64_t ph = p.h.ne[1], pw = p.h.ne[0];
    const bool has_phi = av_tensor_present(p.phi_w);
    const bool has_next = av_tensor_present(p.next);
    const int64_t pn = p.pn_next;
    AV_CHECK(Gh * Gw <= static_cast<int64_t>(UA_NT) * UA_MAXP,
             "upsample_accum: f_hat grid " + std::to_string(Gh) + "x" + std::to_string(Gw) + " above 4096 positions");
    AV_CHECK(B <= 65535 && Cv <= 65535, "upsample_accum: B or Cv too large");
    const size_t plane = sizeof(float) * static_cast<size_t>(Gh * Gw);
    const size_t fixed = sizeof(float) * static_cast<size_t>(ph * Gw + Cv * 9);
    const size_t budget = 48 * 1024;
    AV_CHECK(fixed + plane <= budget, "upsample_accum: sizes exceed shared memory");
    int64_t chunk = has_phi ? static_cast<int64_t>((budget - fixed) / plane) : 1;
    if (chunk > Cv) chunk = Cv;
    const size_t smem = fixed + plane * static_cast<size_t>(chunk);
    av_dtype wt = has_phi ? p.phi_w.dtype : AV_F32;
    const dim3 grid(static_cast<unsigned>(Cv), static_cast<unsigned>(B));
    auto go = [&](auto tag) {
        using TW = decltype(tag);
        upsample_accum_kernel<TW><<<grid, UA_NT, smem, ctx.stream>>>(
            static_cast<const float*>(p.h.data), has_phi ? static_cast<const TW*>(p.phi_w.data) : nullptr,
            av_tensor_present(p.phi_b) ? static_cast<const float*>(p.phi_b.data) : nullptr,
            static_cast<float*>(p.f_hat.data), has_next ? static_cast<float*>(p.next.data) : nullptr,
            static_cast<int>(Cv), static_cast<int>(ph), static_cast<int>(pw), static_cast<int>(Gh),
            static_cast<int>(Gw), static_cast<int>(pn), static_cast<int>(chunk), p.phi_ratio);
    };
    switch (wt) {
        case AV_F16: go(__half()); break;
        case AV_BF16: go(__nv_bfloat16()); break;
        default: go(float()); break;
    }
    CUDA_CHECK_LAUNCH("upsample_accum");
    return av_status::success();
}
