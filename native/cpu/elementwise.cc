// Elementwise CPU ops: modulate, binary (broadcast add/mul), unary activations, row softmax
// and the strided dtype-converting copy (core/ops.h).
//
// Every op walks rows of the innermost axis and splits rows over the pool. Inner loops are
// contiguous, branch-free (selects, not ifs) and marked `ivdep` because y may alias x exactly
// ("in place ok") while partial overlap is rejected up front; with that the compiler vectorises
// them. exp-based activations use av_expf below instead of libm so that they vectorise too.
// The row kernels are compiled three times (baseline, AVX2+FMA, AVX-512) with target
// attributes and picked by av_cpu_simd_level(), because the build compiles native/cpu for the
// baseline ISA only.
//
// GCC's default -ftrapping-math forbids if-converting the clamps and selects of the inner
// loops below (it will not speculate a possibly trapping FP op), which leaves them scalar;
// nothing here reads FP exception flags. Placed before every include so that all code in this
// file shares the same FP options (inlining needs that).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif  // GCC
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

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

// Defines `name params` that runs the always-inline `name##_impl args`, compiled once per ISA
// level, dispatching on av_cpu_simd_level() (which honours the AV_SIMD cap).
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

constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();

// exp(x) in fp32, branch-free so loops calling it vectorise: Cody-Waite reduction by ln 2 and
// the Cephes expf polynomial (measured max error 1.4 ulp over [-87, 88]). Like expf it
// underflows to exactly 0 (exp(-inf) = 0) and overflows to inf; NaN gives an unspecified value.
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

// Activation of core/ops.h av_act. GELU_tanh uses 0.5(1+tanh(u)) = 1/(1+exp(-2u)), which is
// exact algebra and avoids the cancellation of 1+tanh(u) for large negative u.
template <int ACT>
AV_INLINE float av_act_apply(float x) {
    if constexpr (ACT == AV_ACT_GELU_TANH) {
        const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return x / (1.0f + av_expf(-2.0f * u));
    } else if constexpr (ACT == AV_ACT_SILU) {
        return x / (1.0f + av_expf(-x));
    } else if constexpr (ACT == AV_ACT_SIGMOID) {
        return 1.0f / (1.0f + av_expf(-x));
    } else {
        return x;
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks.

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + nb && pb < pa + na;
}

// y may be x itself (in place) or disjoint from it; a partial overlap would read values that
// were already overwritten.
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

// Rows per parallel chunk so that a chunk holds roughly `elems` elements.
int64_t grain_rows(int64_t row_len, int64_t elems = 16384) {
    return std::max<int64_t>(1, elems / std::max<int64_t>(1, row_len));
}

// ---------------------------------------------------------------------------------------------
// modulate: y = x * (1 + scale[g]) + shift[g]

AV_INLINE void modulate_rows_impl(const float* x, float* y, const float* scale, const float* shift, int64_t C,
                                  int64_t rows_per_group, int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
        const float* __restrict sc = scale + (m / rows_per_group) * C;
        const float* __restrict sh = shift + (m / rows_per_group) * C;
        const float* xr = x + m * C;
        float* yr = y + m * C;
        AV_IVDEP
        for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * (1.0f + sc[c]) + sh[c];
    }
}
AV_CLONES(modulate_rows,
          (const float* x, float* y, const float* scale, const float* shift, int64_t C, int64_t rows_per_group,
           int64_t m0, int64_t m1),
          (x, y, scale, shift, C, rows_per_group, m0, m1))

// ---------------------------------------------------------------------------------------------
// binary: y = a + alpha*b  |  y = a * (beta + alpha*b), b row (m / b_div) % Mb, Nb in {N, 1}

template <int KIND, bool B_SCALAR>
AV_INLINE void binary_rows_t(const float* a, const float* b, float* y, int64_t N, int64_t Nb, int64_t Mb, int64_t b_div,
                             float alpha, float beta, int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
        const float* ar = a + m * N;
        float* yr = y + m * N;
        const float* __restrict br = b + ((m / b_div) % Mb) * Nb;
        if constexpr (B_SCALAR) {
            const float bv = br[0];
            if constexpr (KIND == AV_BIN_ADD) {
                const float add = alpha * bv;
                AV_IVDEP
                for (int64_t n = 0; n < N; ++n) yr[n] = ar[n] + add;
            } else {
                const float mul = beta + alpha * bv;
                AV_IVDEP
                for (int64_t n = 0; n < N; ++n) yr[n] = ar[n] * mul;
            }
        } else if constexpr (KIND == AV_BIN_ADD) {
            AV_IVDEP
            for (int64_t n = 0; n < N; ++n) yr[n] = ar[n] + alpha * br[n];
        } else {
            AV_IVDEP
            for (int64_t n = 0; n < N; ++n) yr[n] = ar[n] * (beta + alpha * br[n]);
        }
    }
}

AV_INLINE void binary_rows_impl(const float* a, const float* b, float* y, int64_t N, int64_t Nb, int64_t Mb,
                                int64_t b_div, int kind, float alpha, float beta, int64_t m0, int64_t m1) {
    const bool scalar = Nb == 1 && N != 1;
    if (kind == AV_BIN_ADD) {
        if (scalar) binary_rows_t<AV_BIN_ADD, true>(a, b, y, N, Nb, Mb, b_div, alpha, beta, m0, m1);
        else binary_rows_t<AV_BIN_ADD, false>(a, b, y, N, Nb, Mb, b_div, alpha, beta, m0, m1);
    } else {
        if (scalar) binary_rows_t<AV_BIN_MUL, true>(a, b, y, N, Nb, Mb, b_div, alpha, beta, m0, m1);
        else binary_rows_t<AV_BIN_MUL, false>(a, b, y, N, Nb, Mb, b_div, alpha, beta, m0, m1);
    }
}
AV_CLONES(binary_rows,
          (const float* a, const float* b, float* y, int64_t N, int64_t Nb, int64_t Mb, int64_t b_div, int kind,
           float alpha, float beta, int64_t m0, int64_t m1),
          (a, b, y, N, Nb, Mb, b_div, kind, alpha, beta, m0, m1))

// ---------------------------------------------------------------------------------------------
// unary: y = act(x) over a flat range

template <int ACT>
AV_INLINE void unary_range_t(const float* x, float* y, int64_t i0, int64_t i1) {
    AV_IVDEP
    for (int64_t i = i0; i < i1; ++i) y[i] = av_act_apply<ACT>(x[i]);
}

AV_INLINE void unary_range_impl(const float* x, float* y, int act, int64_t i0, int64_t i1) {
    switch (act) {
        case AV_ACT_GELU_TANH: unary_range_t<AV_ACT_GELU_TANH>(x, y, i0, i1); break;
        case AV_ACT_SILU: unary_range_t<AV_ACT_SILU>(x, y, i0, i1); break;
        case AV_ACT_SIGMOID: unary_range_t<AV_ACT_SIGMOID>(x, y, i0, i1); break;
        default: unary_range_t<AV_ACT_NONE>(x, y, i0, i1); break;
    }
}
AV_CLONES(unary_range, (const float* x, float* y, int act, int64_t i0, int64_t i1), (x, y, act, i0, i1))

// ---------------------------------------------------------------------------------------------
// softmax over rows: y = softmax(scale * x); -inf stays -inf whatever the scale (0 * -inf would
// be NaN); an all -inf row gives zeros.

constexpr int k_lanes = 16;  // independent accumulators: one AVX-512 vector, two AVX2 vectors

AV_INLINE void softmax_rows_impl(const float* x, float* y, int64_t N, float scale, int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
        const float* xr = x + m * N;
        float* yr = y + m * N;
        // Pass 1: s = scale*x (kept -inf for -inf) into y, and its max in 16 lanes.
        float mx[k_lanes];
        for (int t = 0; t < k_lanes; ++t) mx[t] = k_neg_inf;
        int64_t n = 0;
        for (; n + k_lanes <= N; n += k_lanes) {
            AV_IVDEP
            for (int t = 0; t < k_lanes; ++t) {
                const float v = xr[n + t];
                const float s = v == k_neg_inf ? k_neg_inf : scale * v;
                yr[n + t] = s;
                mx[t] = s > mx[t] ? s : mx[t];
            }
        }
        float row_max = k_neg_inf;
        for (; n < N; ++n) {
            const float v = xr[n];
            const float s = v == k_neg_inf ? k_neg_inf : scale * v;
            yr[n] = s;
            row_max = s > row_max ? s : row_max;
        }
        for (int t = 0; t < k_lanes; ++t) row_max = mx[t] > row_max ? mx[t] : row_max;
        if (row_max == k_neg_inf) {
            std::memset(yr, 0, static_cast<size_t>(N) * sizeof(float));
            continue;
        }
        // Pass 2: p = exp(s - max) (exp(-inf) = 0), summed in 16 f32 lanes per block of 1024
        // and the block totals in double, so long rows keep full f32 accuracy.
        double total = 0.0;
        for (int64_t b0 = 0; b0 < N; b0 += 1024) {
            const int64_t b1 = std::min(N, b0 + 1024);
            float acc[k_lanes] = {};
            int64_t i = b0;
            for (; i + k_lanes <= b1; i += k_lanes) {
                AV_IVDEP
                for (int t = 0; t < k_lanes; ++t) {
                    const float p = av_expf(yr[i + t] - row_max);
                    yr[i + t] = p;
                    acc[t] += p;
                }
            }
            double block = 0.0;
            for (; i < b1; ++i) {
                const float p = av_expf(yr[i] - row_max);
                yr[i] = p;
                block += p;
            }
            for (int t = 0; t < k_lanes; ++t) block += acc[t];
            total += block;
        }
        const float inv = static_cast<float>(1.0 / total);  // total >= 1: the max term is exp(0)
        for (int64_t i = 0; i < N; ++i) yr[i] *= inv;
    }
}
AV_CLONES(softmax_rows, (const float* x, float* y, int64_t N, float scale, int64_t m0, int64_t m1),
          (x, y, N, scale, m0, m1))

// ---------------------------------------------------------------------------------------------
// copy: strided view -> contiguous, with dtype conversion

bool is_float_dtype(av_dtype t) { return t == AV_F32 || t == AV_F16 || t == AV_BF16; }

// Extent in bytes [lo, hi) of a strided view relative to its data pointer (strides may be
// zero or negative).
void view_extent(const av_tensor& t, int64_t* lo, int64_t* hi) {
    int64_t l = 0, h = 0;
    for (int i = 0; i < 4; ++i) {
        const int64_t span = (t.ne[i] - 1) * t.nb[i];
        if (span < 0) l += span;
        else h += span;
    }
    *lo = l;
    *hi = h + static_cast<int64_t>(av_dtype_size(t.dtype));
}

template <av_dtype SRC, av_dtype DST>
void copy_row_t(const uint8_t* src, int64_t nb0, uint8_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t* s = src + i * nb0;
        float v;
        if constexpr (SRC == AV_F32) {
            std::memcpy(&v, s, 4);
        } else {
            uint16_t h;
            std::memcpy(&h, s, 2);
            v = SRC == AV_F16 ? av_f16_to_f32(h) : av_bf16_to_f32(h);
        }
        if constexpr (DST == AV_F32) {
            std::memcpy(dst + 4 * i, &v, 4);
        } else {
            const uint16_t h = DST == AV_F16 ? av_f32_to_f16(v) : av_f32_to_bf16(v);
            std::memcpy(dst + 2 * i, &h, 2);
        }
    }
}

using copy_row_fn = void (*)(const uint8_t*, int64_t, uint8_t*, int64_t);

template <av_dtype SRC>
copy_row_fn pick_copy_dst(av_dtype dst) {
    switch (dst) {
        case AV_F32: return copy_row_t<SRC, AV_F32>;
        case AV_F16: return copy_row_t<SRC, AV_F16>;
        case AV_BF16: return copy_row_t<SRC, AV_BF16>;
        default: return nullptr;
    }
}

copy_row_fn pick_copy(av_dtype src, av_dtype dst) {
    switch (src) {
        case AV_F32: return pick_copy_dst<AV_F32>(dst);
        case AV_F16: return pick_copy_dst<AV_F16>(dst);
        case AV_BF16: return pick_copy_dst<AV_BF16>(dst);
        default: return nullptr;
    }
}

// Same-dtype copy of one row of any element size (i32, u8, or float types with nb0 != size).
void copy_row_raw(const uint8_t* src, int64_t nb0, uint8_t* dst, int64_t n, size_t es) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * es, src + i * nb0, es);
}

}  // namespace

av_status av_cpu_modulate(const av_modulate_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "modulate: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "modulate: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "modulate: y must be x itself or not overlap it");
    AV_CHECK(av_tensor_present(p.scale) && av_tensor_present(p.shift), "modulate: scale and shift are required");
    AV_CHECK(is_f32c(p.scale) && is_f32c(p.shift), "modulate: scale and shift must be contiguous f32");
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const int64_t rpg = p.rows_per_group;
    AV_CHECK(rpg >= 1, "modulate: rows_per_group must be >= 1");
    const int64_t G = (M + rpg - 1) / rpg;
    AV_CHECK(p.scale.ne[0] == C && av_tensor_nelements(p.scale) == G * C,
             "modulate: scale must be [" + std::to_string(G) + ", " + std::to_string(C) +
                 "] (ceil(M/rows_per_group), C)");
    AV_CHECK(same_ne(p.scale, p.shift), "modulate: shift must have the shape of scale");
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const float* sc = static_cast<const float*>(p.scale.data);
    const float* sh = static_cast<const float*>(p.shift.data);
    av_cpu_parallel_for(M, grain_rows(C), [&](int64_t m0, int64_t m1) { modulate_rows(x, y, sc, sh, C, rpg, m0, m1); });
    return av_status::success();
}

av_status av_cpu_binary(const av_binary_params& p) {
    AV_CHECK(is_f32c(p.a) && is_f32c(p.b) && is_f32c(p.y), "binary: a, b and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.a, p.y), "binary: y must have the shape of a");
    AV_CHECK(p.kind == AV_BIN_ADD || p.kind == AV_BIN_MUL, "binary: kind must be 0 (add) or 1 (mul)");
    AV_CHECK(p.b_div >= 1, "binary: b_div must be >= 1");
    AV_CHECK(alias_ok(p.y, p.a), "binary: y must be a itself or not overlap it");
    AV_CHECK(!overlaps(p.y.data, av_tensor_nbytes(p.y), p.b.data, av_tensor_nbytes(p.b)),
             "binary: y must not overlap b");
    const int64_t N = p.a.ne[0];
    const int64_t M = av_tensor_nelements(p.a) / N;
    const int64_t Nb = p.b.ne[0];
    const int64_t Mb = av_tensor_nelements(p.b) / Nb;
    AV_CHECK(Nb == N || Nb == 1,
             "binary: b's last dimension must be " + std::to_string(N) + " or 1, got " + std::to_string(Nb));
    const float* a = static_cast<const float*>(p.a.data);
    const float* b = static_cast<const float*>(p.b.data);
    float* y = static_cast<float*>(p.y.data);
    const int64_t b_div = p.b_div;
    const int kind = p.kind;
    const float alpha = p.alpha, beta = p.beta;
    av_cpu_parallel_for(M, grain_rows(N), [&](int64_t m0, int64_t m1) {
        binary_rows(a, b, y, N, Nb, Mb, b_div, kind, alpha, beta, m0, m1);
    });
    return av_status::success();
}

av_status av_cpu_unary(const av_unary_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "unary: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "unary: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "unary: y must be x itself or not overlap it");
    AV_CHECK(p.act >= AV_ACT_NONE && p.act <= AV_ACT_SIGMOID, "unary: act must be 0..3, got " + std::to_string(p.act));
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const int act = p.act;
    av_cpu_parallel_for(av_tensor_nelements(p.x), 16384,
                        [&](int64_t i0, int64_t i1) { unary_range(x, y, act, i0, i1); });
    return av_status::success();
}

av_status av_cpu_softmax(const av_softmax_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "softmax: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "softmax: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "softmax: y must be x itself or not overlap it");
    const int64_t N = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / N;
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const float scale = p.scale;
    av_cpu_parallel_for(M, grain_rows(N, 4096), [&](int64_t m0, int64_t m1) { softmax_rows(x, y, N, scale, m0, m1); });
    return av_status::success();
}

av_status av_cpu_copy(const av_copy_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.y), "copy: x and y are required");
    AV_CHECK(same_ne(p.x, p.y), "copy: y must have the shape (ne) of x");
    AV_CHECK(is_contig(p.y, p.y.dtype), "copy: y must be non-empty and contiguous");
    const bool both_float = is_float_dtype(p.x.dtype) && is_float_dtype(p.y.dtype);
    const bool same_int = p.x.dtype == p.y.dtype && (p.x.dtype == AV_I32 || p.x.dtype == AV_U8);
    AV_CHECK(both_float || same_int, std::string("copy: unsupported conversion ") + av_dtype_name(p.x.dtype) +
                                         " -> " + av_dtype_name(p.y.dtype) +
                                         " (f32/f16/bf16 among themselves, i32->i32, u8->u8)");
    int64_t lo = 0, hi = 0;
    view_extent(p.x, &lo, &hi);
    AV_CHECK(!overlaps(static_cast<const uint8_t*>(p.x.data) + lo, static_cast<size_t>(hi - lo), p.y.data,
                       av_tensor_nbytes(p.y)),
             "copy: y must not overlap x");

    const av_tensor x = p.x;
    uint8_t* y = static_cast<uint8_t*>(p.y.data);
    const int64_t n0 = x.ne[0];
    const int64_t rows = x.ne[1] * x.ne[2] * x.ne[3];
    const size_t xs = av_dtype_size(x.dtype), ys = av_dtype_size(p.y.dtype);
    const bool raw = x.dtype == p.y.dtype;
    const copy_row_fn conv = raw ? nullptr : pick_copy(x.dtype, p.y.dtype);
    av_cpu_parallel_for(rows, grain_rows(n0, 32768), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            // Row r of the contiguous output is (i1, i2, i3) of the view.
            const int64_t i1 = r % x.ne[1];
            const int64_t i2 = (r / x.ne[1]) % x.ne[2];
            const int64_t i3 = r / (x.ne[1] * x.ne[2]);
            const uint8_t* src = static_cast<const uint8_t*>(x.data) + i1 * x.nb[1] + i2 * x.nb[2] + i3 * x.nb[3];
            uint8_t* dst = y + static_cast<size_t>(r) * static_cast<size_t>(n0) * ys;
            if (raw && x.nb[0] == static_cast<int64_t>(xs)) std::memcpy(dst, src, static_cast<size_t>(n0) * xs);
            else if (raw) copy_row_raw(src, x.nb[0], dst, n0, xs);
            else conv(src, x.nb[0], dst, n0);
        }
    });
    return av_status::success();
}
