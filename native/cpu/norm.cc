// Normalisation CPU ops (core/ops.h): LayerNorm with optional affine and fused AdaLN
// modulation, and GroupNorm with optional affine and fused SiLU.
//
// Statistics are two-pass: the mean, then the moments of x - fp32(mean) (exact shifted data),
// which stays accurate when |mean| >> std where the one-pass E[x^2]-E[x]^2 cancels. Each pass
// sums in 16 f32 lanes over blocks of 1024 elements and adds the block totals in double, so
// the sums vectorise without -ffast-math yet keep full f32 accuracy over a GroupNorm group
// of ~10^6 elements. The apply pass folds every per-channel factor into
// y = ((x - mean_hi) - mean_lo)*rstd*a[c] + b[c]:
//   LN:  a = w*(1+scale), b = bias*(1+scale) + shift   per row group (AdaLN: per image)
//   GN:  a = w,           b = bias                     per channel
// Subtracting the mean first (rather than folding it into b) keeps the result accurate when
// |mean| >> std.
// LayerNorm splits rows over the pool; GroupNorm computes (image, group) statistics in one
// parallel pass and applies per (image, channel) plane in a second.
// Kernels are compiled per ISA level (baseline, AVX2+FMA, AVX-512) and picked at run time.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../core/ops-check.h"
#include "backend-cpu.h"
#include "simd.h"

namespace {

constexpr int k_lanes = 16;     // independent f32 accumulators (one AVX-512 or two AVX2 vectors)
constexpr int64_t k_block = 1024;  // elements per f32 partial sum before it joins the double total

// sum(x) over n elements.
AV_INLINE double av_sum(const float* __restrict x, int64_t n) {
    double total = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += k_block) {
        const int64_t b1 = std::min(n, b0 + k_block);
        float acc[k_lanes] = {};
        int64_t i = b0;
        for (; i + k_lanes <= b1; i += k_lanes)
            for (int t = 0; t < k_lanes; ++t) acc[t] += x[i + t];
        double block = 0.0;
        for (; i < b1; ++i) block += x[i];
        for (int t = 0; t < k_lanes; ++t) block += acc[t];
        total += block;
    }
    return total;
}

// sum(x - shift) and sum((x - shift)^2) over n elements. With shift = fp32(mean), x - shift is
// exact for x near the mean (Sterbenz), so these are the moments of exactly shifted data.
AV_INLINE void av_sums_shifted(const float* __restrict x, int64_t n, float shift, double* s1, double* s2) {
    double t1 = 0.0, t2 = 0.0;
    for (int64_t b0 = 0; b0 < n; b0 += k_block) {
        const int64_t b1 = std::min(n, b0 + k_block);
        float a1[k_lanes] = {}, a2[k_lanes] = {};
        int64_t i = b0;
        for (; i + k_lanes <= b1; i += k_lanes)
            for (int t = 0; t < k_lanes; ++t) {
                const float d = x[i + t] - shift;
                a1[t] += d;
                a2[t] += d * d;
            }
        double c1 = 0.0, c2 = 0.0;
        for (; i < b1; ++i) {
            const double d = static_cast<double>(x[i]) - shift;
            c1 += d;
            c2 += d * d;
        }
        for (int t = 0; t < k_lanes; ++t) {
            c1 += a1[t];
            c2 += a2[t];
        }
        t1 += c1;
        t2 += c2;
    }
    *s1 = t1;
    *s2 = t2;
}

// Statistics of n elements as mean = mean_hi + mean_lo (mean_hi = fp32(mean), mean_lo the
// fp32 rest) and rstd = 1/sqrt(biased var + eps). The apply computes (x - mean_hi) - mean_lo,
// which keeps full f32 accuracy when |mean| >> std, where a single fp32 mean would be off by
// up to half an ulp of the mean (relative error ulp(mean)/std in y).
struct av_stats {
    float mean_hi, mean_lo, rstd;
};

AV_INLINE av_stats av_moments(const float* x, int64_t n, float eps) {
    const double dn = static_cast<double>(n);
    const float hi = static_cast<float>(av_sum(x, n) / dn);
    double s1, s2;
    av_sums_shifted(x, n, hi, &s1, &s2);
    const double lo = s1 / dn;
    const double var = std::max(0.0, s2 / dn - lo * lo);  // shifted-data variance
    return {hi, static_cast<float>(lo), static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)))};
}

// ---------------------------------------------------------------------------------------------
// LayerNorm rows [m0, m1). coef (2*C floats of scratch) holds a|b of the current row group
// when HAS_COEF; without affine and modulation the apply is (x - mean) * rstd alone.

struct ln_args {
    const float* x;
    float* y;
    const float* weight;  // may be null
    const float* bias;
    const float* scale;  // [G, C] or null
    const float* shift;
    int64_t C;
    int64_t rows_per_group;
    float eps;
};

template <bool HAS_COEF>
AV_INLINE void ln_rows_t(const ln_args& a, float* coef, int64_t m0, int64_t m1) {
    const int64_t C = a.C;
    int64_t coef_group = -1;
    float* __restrict ca = coef;
    float* __restrict cb = coef + C;
    for (int64_t m = m0; m < m1; ++m) {
        const float* xr = a.x + m * C;
        float* yr = a.y + m * C;
        const av_stats st = av_moments(xr, C, a.eps);
        const float mhi = st.mean_hi, mlo = st.mean_lo, rstd = st.rstd;
        if constexpr (HAS_COEF) {
            // (xhat*w + bias)*(1+s) + sh = xhat*[w(1+s)] + [bias(1+s) + sh]; rebuilt when the
            // row group changes (once per image for AdaLN).
            const int64_t g = m / a.rows_per_group;
            if (g != coef_group) {
                coef_group = g;
                for (int64_t c = 0; c < C; ++c) {
                    const float s1 = a.scale ? 1.0f + a.scale[g * C + c] : 1.0f;
                    const float w = a.weight ? a.weight[c] : 1.0f;
                    const float b = a.bias ? a.bias[c] : 0.0f;
                    ca[c] = w * s1;
                    cb[c] = b * s1 + (a.shift ? a.shift[g * C + c] : 0.0f);
                }
            }
            AV_IVDEP
            for (int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mhi) - mlo) * rstd * ca[c] + cb[c];
        } else {
            AV_IVDEP
            for (int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - mhi) - mlo) * rstd;
        }
    }
}

AV_INLINE void ln_rows_impl(const ln_args& a, float* coef, int64_t m0, int64_t m1) {
    if (coef) ln_rows_t</*HAS_COEF=*/true>(a, coef, m0, m1);
    else ln_rows_t</*HAS_COEF=*/false>(a, coef, m0, m1);
}
AV_CLONES(ln_rows, (const ln_args& a, float* coef, int64_t m0, int64_t m1), (a, coef, m0, m1))

// ---------------------------------------------------------------------------------------------
// GroupNorm.

AV_INLINE void moments_impl(const float* x, int64_t n, float eps, av_stats* out) { *out = av_moments(x, n, eps); }
AV_CLONES(moments, (const float* x, int64_t n, float eps, av_stats* out), (x, n, eps, out))

template <bool SILU>
AV_INLINE void gn_plane_t(const float* x, float* y, int64_t S, float mhi, float mlo, float a, float b) {
    AV_IVDEP
    for (int64_t s = 0; s < S; ++s) {
        const float v = ((x[s] - mhi) - mlo) * a + b;
        if constexpr (SILU) y[s] = v / (1.0f + av_expf(-v));
        else y[s] = v;
    }
}

AV_INLINE void gn_plane_impl(const float* x, float* y, int64_t S, float mhi, float mlo, float a, float b,
                             bool silu) {
    if (silu) gn_plane_t</*SILU=*/true>(x, y, S, mhi, mlo, a, b);
    else gn_plane_t</*SILU=*/false>(x, y, S, mhi, mlo, a, b);
}
AV_CLONES(gn_plane, (const float* x, float* y, int64_t S, float mhi, float mlo, float a, float b, bool silu),
          (x, y, S, mhi, mlo, a, b, silu))

}  // namespace

av_status av_cpu_layernorm(const av_layernorm_params& p) {
    AV_TRY(av_check_layernorm(p));
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const bool mod = av_tensor_present(p.scale) || av_tensor_present(p.shift);
    ln_args a;
    a.x = static_cast<const float*>(p.x.data);
    a.y = static_cast<float*>(p.y.data);
    a.weight = static_cast<const float*>(p.weight.data);
    a.bias = static_cast<const float*>(p.bias.data);
    a.scale = mod ? static_cast<const float*>(p.scale.data) : nullptr;
    a.shift = mod ? static_cast<const float*>(p.shift.data) : nullptr;
    a.C = C;
    a.rows_per_group = mod ? p.rows_per_group : M;
    a.eps = p.eps;
    const bool has_coef = mod || a.weight || a.bias;
    std::atomic<bool> oom{false};
    av_cpu_parallel_for(M, std::max<int64_t>(1, 8192 / C), [&](int64_t m0, int64_t m1) {
        std::unique_ptr<float[]> coef;
        if (has_coef) {
            coef.reset(new (std::nothrow) float[2 * static_cast<size_t>(C)]);
            if (!coef) {
                oom = true;
                return;
            }
        }
        ln_rows(a, coef.get(), m0, m1);
    });
    if (oom) return av_status::error(AV_ERR_OOM, "layernorm: out of memory for row coefficients");
    return av_status::success();
}

av_status av_cpu_groupnorm(const av_groupnorm_params& p) {
    AV_TRY(av_check_groupnorm(p));
    const int64_t S = p.x.ne[0], C = p.x.ne[1], B = p.x.ne[2];
    const int64_t G = p.groups;
    const int64_t cg = C / G;
    std::vector<av_stats> stats;
    try {
        stats.resize(static_cast<size_t>(B * G));
    } catch (const std::bad_alloc&) {
        return av_status::error(AV_ERR_OOM, "groupnorm: out of memory for statistics");
    }
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const float* w = static_cast<const float*>(p.weight.data);
    const float* bias = static_cast<const float*>(p.bias.data);
    const float eps = p.eps;
    av_stats* st = stats.data();
    // Group (b, g) is the contiguous range of cg channel planes starting at channel g*cg.
    av_cpu_parallel_for(B * G, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) moments(x + i * cg * S, cg * S, eps, &st[i]);
    });
    const bool silu = p.silu != 0;
    av_cpu_parallel_for(B * C, std::max<int64_t>(1, 16384 / S), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / C, c = r % C;
            const av_stats& g = st[b * G + c / cg];
            const float a = g.rstd * (w ? w[c] : 1.0f);
            gn_plane(x + r * S, y + r * S, S, g.mean_hi, g.mean_lo, a, bias ? bias[c] : 0.0f, silu);
        }
    });
    return av_status::success();
}
