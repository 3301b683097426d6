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
//
// GCC's default -ftrapping-math forbids if-converting the clamps and selects of the inner
// loops below (it will not speculate a possibly trapping FP op), which leaves them scalar;
// nothing here reads FP exception flags. Placed before every include so that all code in this
// file shares the same FP options (inlining needs that).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif  // GCC
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backend-cpu.h"

namespace {

#define AV_INLINE inline __attribute__((always_inline))

#if defined(__clang__)
#define AV_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define AV_IVDEP _Pragma("GCC ivdep")
#else
#define AV_IVDEP
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64))
#define AV_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define AV_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define AV_HAVE_CLONES 1
#endif  // x86-64

// Defines `name params` running the always-inline `name##_impl args` compiled per ISA level.
#ifdef AV_HAVE_CLONES
#define AV_CLONES(name, params, args)                                              \
    AV_TARGET_AVX512 void name##_avx512 params { name##_impl args; }               \
    AV_TARGET_AVX2 void name##_avx2 params { name##_impl args; }                   \
    void name##_base params { name##_impl args; }                                  \
    void name params {                                                             \
        switch (av_cpu_simd_level()) {                                             \
            case AV_SIMD_AVX512: name##_avx512 args; return;                       \
            case AV_SIMD_AVX2: name##_avx2 args; return;                           \
            default: name##_base args; return;                                     \
        }                                                                          \
    }
#else
#define AV_CLONES(name, params, args) \
    void name params { name##_impl args; }
#endif  // AV_HAVE_CLONES

// exp(x) in fp32, branch-free so that loops vectorise (a copy of elementwise.cc's: Cephes expf
// polynomial after Cody-Waite reduction, 1.4 ulp; underflows to 0, overflows to inf).
AV_INLINE float av_expf(float x) {
    float xc = x < -110.0f ? -110.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    // Adding 1.5*2^23 rounds xc*log2(e) to the nearest integer n in [-159, 129].
    const float t = xc * 1.44269504088896341f + 12582912.0f;
    const float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;  // ln2 split into an exact high part and a correction
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // 2^n as two normal factors 2^n1 * 2^n2, so the product underflows to exactly 0 (x <= -104)
    // or overflows to inf (x > 88.72) the way expf does, without a compare on the result.
    const int32_t ni = static_cast<int32_t>(n);
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    const uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
    float s1, s2;
    std::memcpy(&s1, &b1, sizeof s1);
    std::memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}

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

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + nb && pb < pa + na;
}

bool alias_ok(const av_tensor& y, const av_tensor& x) {
    return y.data == x.data || !overlaps(y.data, av_tensor_nbytes(y), x.data, av_tensor_nbytes(x));
}

// A present (non-null), non-empty, contiguous tensor of dtype dt. An absent operand has
// data == nullptr and would otherwise pass as a contiguous 1x1x1x1 view.
bool is_contig(const av_tensor& t, av_dtype dt) {
    if (t.data == nullptr || t.dtype != dt) return false;
    for (int i = 0; i < 4; ++i)
        if (t.ne[i] < 1) return false;
    return av_tensor_is_contiguous(t);
}

bool is_f32c(const av_tensor& t) { return is_contig(t, AV_F32); }

bool same_ne(const av_tensor& a, const av_tensor& b) {
    return a.ne[0] == b.ne[0] && a.ne[1] == b.ne[1] && a.ne[2] == b.ne[2] && a.ne[3] == b.ne[3];
}

// An optional per-channel vector: absent, or contiguous f32 with exactly C elements.
bool vec_ok(const av_tensor& t, int64_t C) {
    return !av_tensor_present(t) || (is_f32c(t) && t.ne[0] == C && av_tensor_nelements(t) == C);
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
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "layernorm: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "layernorm: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "layernorm: y must be x itself or not overlap it");
    AV_CHECK(p.eps >= 0.0f, "layernorm: eps must be >= 0");
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    AV_CHECK(vec_ok(p.weight, C) && vec_ok(p.bias, C),
             "layernorm: weight and bias must be contiguous f32 [" + std::to_string(C) + "] when present");
    const bool mod = av_tensor_present(p.scale) || av_tensor_present(p.shift);
    if (mod) {
        AV_CHECK(av_tensor_present(p.scale) && av_tensor_present(p.shift),
                 "layernorm: scale and shift must be both present or both absent");
        AV_CHECK(p.rows_per_group >= 1, "layernorm: rows_per_group must be >= 1");
        const int64_t G = (M + p.rows_per_group - 1) / p.rows_per_group;
        AV_CHECK(is_f32c(p.scale) && is_f32c(p.shift) && same_ne(p.scale, p.shift) && p.scale.ne[0] == C &&
                     av_tensor_nelements(p.scale) == G * C,
                 "layernorm: scale and shift must be contiguous f32 [" + std::to_string(G) + ", " + std::to_string(C) +
                     "] (ceil(M/rows_per_group), C)");
    }
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
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "groupnorm: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "groupnorm: y must have the shape of x");
    AV_CHECK(p.x.ne[3] == 1, "groupnorm: x must be 3-D [B, C, S] (S = H*W)");
    AV_CHECK(alias_ok(p.y, p.x), "groupnorm: y must be x itself or not overlap it");
    AV_CHECK(p.eps >= 0.0f, "groupnorm: eps must be >= 0");
    const int64_t S = p.x.ne[0], C = p.x.ne[1], B = p.x.ne[2];
    const int64_t G = p.groups;
    AV_CHECK(G >= 1 && C % G == 0,
             "groupnorm: groups (" + std::to_string(G) + ") must divide the channels (" + std::to_string(C) + ")");
    AV_CHECK(vec_ok(p.weight, C) && vec_ok(p.bias, C),
             "groupnorm: weight and bias must be contiguous f32 [" + std::to_string(C) + "] when present");
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
