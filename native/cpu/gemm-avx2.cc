// AVX2 + FMA kernels of the CPU GEMM (compiled with -mavx2 -mfma -mf16c; only called when
// av_cpu_simd_level() is at least AVX2). See gemm.h for the driver and the packed layouts.
//
// Micro-kernel: MR = 6 rows x NR = 16 columns (2 ymm) = 12 accumulators, plus 2 B vectors and
// one broadcast: 15 of the 16 ymm registers (the classic Haswell shape). Edge tiles use
// instances with fewer rows / one vector. In isolation it runs at ~105 GFLOP/s on one Zen 5
// core, the 2 x 8-lane FMA peak.
//
// Nothing here may call inline functions or std:: templates of shared headers (see gemm.h).
#if defined(__x86_64__) || defined(_M_X64)  // elsewhere gemm.cc maps every level to scalar
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm.h"

namespace {

constexpr int MR = 6;
constexpr int NR = 16;

inline int min_i(int64_t a, int64_t b) { return static_cast<int>(a < b ? a : b); }

// Lanes [lo, hi) as a maskload/maskstore mask (clamped to [0, 8]).
inline __m256i lane_mask(int64_t lo, int64_t hi) {
    if (lo < 0) lo = 0;
    if (hi > 8) hi = 8;
    if (hi < lo) hi = lo;
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i ge_lo = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(static_cast<int>(lo) - 1));
    __m256i lt_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), idx);
    return _mm256_and_si256(ge_lo, lt_hi);
}

// e^x (Cephes expf, see gemm-avx512.cc); 2^n is built in the exponent field, so x is clamped
// to [-87.3, 88.3] where n stays in the normal range [-126, 127].
inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Same forms as gemm.cc / gemm-avx512.cc (GELU_tanh = x / (1 + e^{-2u})).
inline __m256 act256(__m256 v, int act) {
    const __m256 one = _mm256_set1_ps(1.0f);
    switch (act) {
        case 1: {
            __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
            __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                     _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
            return _mm256_div_ps(v, _mm256_add_ps(one, exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
        }
        case 2: return _mm256_div_ps(v, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        case 3: return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        default: return v;
    }
}

// ---- micro-kernel -------------------------------------------------------------------------

// Accumulators are named variables, not an array: GCC 12 keeps a __m256 array mirrored in
// memory (a store per FMA) when it cannot scalarise it.
template <int ROWS, int NV>
void ukernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict ct) {
#define AV_DECL(i) [[maybe_unused]] __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
    AV_DECL(0) AV_DECL(1) AV_DECL(2) AV_DECL(3) AV_DECL(4) AV_DECL(5)
#undef AV_DECL
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
        const __m256 b0 = _mm256_loadu_ps(b);
        [[maybe_unused]] const __m256 b1 = NV > 1 ? _mm256_loadu_ps(b + 8) : b0;
#define AV_STEP(i)                                                               \
    if constexpr (ROWS > i) {                                                    \
        const __m256 ai = _mm256_broadcast_ss(a + i);                            \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                              \
        if constexpr (NV > 1) c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);        \
    }
        AV_STEP(0) AV_STEP(1) AV_STEP(2) AV_STEP(3) AV_STEP(4) AV_STEP(5)
#undef AV_STEP
        a += MR;
        b += NR;
    }
#define AV_OUT(i)                                                                \
    if constexpr (ROWS > i) {                                                    \
        _mm256_storeu_ps(ct + i * NR, c##i##0);                                  \
        if constexpr (NV > 1) _mm256_storeu_ps(ct + i * NR + 8, c##i##1);        \
    }
    AV_OUT(0) AV_OUT(1) AV_OUT(2) AV_OUT(3) AV_OUT(4) AV_OUT(5)
#undef AV_OUT
}

using ukernel_fn = void (*)(int64_t, const float*, const float*, float*);

template <int NV>
constexpr ukernel_fn ukernels_nv[MR + 1] = {nullptr,        ukernel<1, NV>, ukernel<2, NV>, ukernel<3, NV>,
                                            ukernel<4, NV>, ukernel<5, NV>, ukernel<6, NV>};

void kernel(int64_t kc, const float* a, const float* b, float* ct, int rows, int cols) {
    if (cols > 8)
        ukernels_nv<2>[rows](kc, a, b, ct);
    else
        ukernels_nv<1>[rows](kc, a, b, ct);
}

// ---- epilogue -----------------------------------------------------------------------------

void store(const float* ct, int64_t ldct, const av_gemm_tile& t, const av_gemm_epi& e) {
    const bool bias_col = e.bias != nullptr && !e.bias_per_row;
    const bool bias_row = e.bias != nullptr && e.bias_per_row;
    for (int i = 0; i < t.rows; ++i) {
        const int64_t m = t.m0 + i;
        const float* src = ct + i * ldct;
        float* dst = t.c + i * t.ldc;
        const __m256 brow = _mm256_set1_ps(bias_row ? e.bias[m] : 0.0f);
        const float* g =
            e.gate ? e.gate + ((m % e.gate_period) / e.gate_rows_per_group) * e.gate_ld + t.n0 : nullptr;
        const float* r = e.res ? e.res + m * e.res_ld + t.n0 : nullptr;
        for (int j = 0; j < t.cols; j += 8) {
            // Full vectors use plain loads: a masked load cannot take its data from the
            // store buffer, and ct was written by the kernel a moment ago.
            const bool full = t.cols - j >= 8;
            const __m256i k = lane_mask(0, t.cols - j);
            auto load = [&](const float* ptr) { return full ? _mm256_loadu_ps(ptr) : _mm256_maskload_ps(ptr, k); };
            __m256 v = load(src + j);
            if (!t.first) v = _mm256_add_ps(v, load(dst + j));
            if (t.last) {
                if (bias_col) v = _mm256_add_ps(v, load(e.bias + t.n0 + j));
                if (bias_row) v = _mm256_add_ps(v, brow);
                v = act256(v, e.act);
                if (g) v = _mm256_mul_ps(v, load(g + j));
                if (r) v = _mm256_add_ps(v, load(r + j));
            }
            if (full)
                _mm256_storeu_ps(dst + j, v);
            else
                _mm256_maskstore_ps(dst + j, k, v);
        }
    }
}

// ---- packing ------------------------------------------------------------------------------

// n (< 8) elements of a row as f32, the rest 0. 16-bit types have no masked load in AVX2, so
// tails go through a zeroed stack copy.
template <int DT>
inline __m256 load8(const void* base, int64_t off, int n) {
    if (DT == AV_F32) {
        const float* p = static_cast<const float*>(base) + off;
        return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(0, n));
    }
    const uint16_t* p = static_cast<const uint16_t*>(base) + off;
    __m128i h;
    if (n >= 8) {
        h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    } else {
        alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < n; ++i) tmp[i] = p[i];
        h = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
    if (DT == AV_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    __m256 u[8];
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int s = 0; s < 4; ++s) {
        r[s] = _mm256_permute2f128_ps(u[s], u[4 + s], 0x20);
        r[4 + s] = _mm256_permute2f128_ps(u[s], u[4 + s], 0x31);
    }
}

template <int DT>
void pack_rows_t(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R) {
    // Rows are read side by side: prefetch each 64 elements ahead (see gemm-avx512.cc).
    constexpr int64_t kPackPrefetch = 64;
    constexpr int64_t esize = DT == AV_F32 ? 4 : 2;
    __m256 v[8];
    for (int g = 0; g < R; g += 8) {
        const int gr = min_i(rows - g, 8);
        const __m256i sm = lane_mask(0, R - g);
        const bool full = R - g >= 8;
        for (int64_t k = 0; k < kc; k += 8) {
            const int kn = min_i(kc - k, 8);
            for (int i = 0; i < 8; ++i) {
                if (i < gr) {
                    const int64_t off = (r0 + g + i) * s.ld + k0 + k;
                    _mm_prefetch(static_cast<const char*>(s.data) + (off + kPackPrefetch) * esize, _MM_HINT_T0);
                    v[i] = load8<DT>(s.data, off, kn);
                } else {
                    v[i] = _mm256_setzero_ps();
                }
            }
            transpose8(v);
            for (int kk = 0; kk < kn; ++kk) {
                if (full)
                    _mm256_storeu_ps(dst + (k + kk) * R + g, v[kk]);
                else
                    _mm256_maskstore_ps(dst + (k + kk) * R + g, sm, v[kk]);
            }
        }
    }
}

void pack_rows(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R) {
    switch (s.dtype) {
        case AV_F16: pack_rows_t<AV_F16>(s, r0, rows, k0, kc, dst, R); break;
        case AV_BF16: pack_rows_t<AV_BF16>(s, r0, rows, k0, kc, dst, R); break;
        default: pack_rows_t<AV_F32>(s, r0, rows, k0, kc, dst, R); break;
    }
}

// Implicit im2col, same scheme as gemm-avx512.cc (tap-major; plain, masked or gathered row
// segments for panels within one output row, pixel by pixel otherwise).
void pack_im2col(const av_gemm_src& s, int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst, int R) {
    struct panel_info {
        int64_t oy, ox;
        int pc;
        bool one_row;
    };
    constexpr int kMaxPanels = 64;
    const float* x = static_cast<const float*>(s.data);
    const int64_t khw = static_cast<int64_t>(s.kh) * s.kw;
    const int64_t np = (cols + R - 1) / R;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t p0 = 0; p0 < np; p0 += kMaxPanels) {
        const int npc = min_i(np - p0, kMaxPanels);
        panel_info info[kMaxPanels];
        for (int q = 0; q < npc; ++q) {
            const int64_t pn0 = n0 + (p0 + q) * R;
            info[q].pc = min_i(cols - (p0 + q) * R, R);
            info[q].oy = pn0 / s.Wo;
            info[q].ox = pn0 % s.Wo;
            info[q].one_row = info[q].ox + info[q].pc <= s.Wo;
        }
        int64_t ci = k0 / khw;
        int ky = static_cast<int>((k0 % khw) / s.kw), kx = static_cast<int>(k0 % s.kw);
        for (int64_t kk = 0; kk < kc; ++kk) {
            const float* plane = x + ci * s.H * s.W;
            const int64_t dy = static_cast<int64_t>(ky) * s.dil - s.pad_t;
            const int64_t dx = static_cast<int64_t>(kx) * s.dil - s.pad_l;
            for (int q = 0; q < npc; ++q) {
                const panel_info& pi = info[q];
                float* d = dst + ((p0 + q) * kc + kk) * R;
                if (!pi.one_row) {
                    int64_t py = pi.oy, px = pi.ox;
                    for (int j = 0; j < R; ++j) {
                        float val = 0.0f;
                        if (j < pi.pc) {
                            const int64_t iy = py * s.stride + dy, ix = px * s.stride + dx;
                            if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) val = plane[iy * s.W + ix];
                            if (++px == s.Wo) {
                                px = 0;
                                ++py;
                            }
                        }
                        d[j] = val;
                    }
                    continue;
                }
                const int64_t iy = pi.oy * s.stride + dy;
                const int64_t ix0 = pi.ox * s.stride + dx;
                if (iy < 0 || iy >= s.H) {
                    for (int j = 0; j < R; j += 8) _mm256_storeu_ps(d + j, _mm256_setzero_ps());
                    continue;
                }
                const float* row = plane + iy * s.W;
                if (s.stride == 1) {
                    if (pi.pc == R && ix0 >= 0 && ix0 + R <= s.W) {
                        for (int j = 0; j < R; j += 8) _mm256_storeu_ps(d + j, _mm256_loadu_ps(row + ix0 + j));
                        continue;
                    }
                    // Integer address arithmetic: masked-off lanes before the row start are
                    // never read, but an out-of-range pointer must not be formed.
                    for (int j = 0; j < R; j += 8) {
                        const __m256i m =
                            _mm256_and_si256(lane_mask(-(ix0 + j), s.W - (ix0 + j)), lane_mask(0, pi.pc - j));
                        const float* src =
                            reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(row) + (ix0 + j) * 4);
                        _mm256_storeu_ps(d + j, _mm256_maskload_ps(src, m));
                    }
                } else {
                    for (int j = 0; j < R; j += 8) {
                        const __m256i ix = _mm256_add_epi32(
                            _mm256_set1_epi32(static_cast<int>(ix0 + static_cast<int64_t>(j) * s.stride)),
                            _mm256_mullo_epi32(lane, _mm256_set1_epi32(s.stride)));
                        const __m256i in = _mm256_and_si256(
                            _mm256_cmpgt_epi32(ix, _mm256_set1_epi32(-1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(s.W)), ix));
                        const __m256i m = _mm256_and_si256(in, lane_mask(0, pi.pc - j));
                        _mm256_storeu_ps(d + j, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), row, ix,
                                                                        _mm256_castsi256_ps(m), 4));
                    }
                }
            }
            if (++kx == s.kw) {
                kx = 0;
                if (++ky == s.kh) {
                    ky = 0;
                    ++ci;
                }
            }
        }
    }
}

// ---- small-M dot products -----------------------------------------------------------------

// Sums of four vectors at once: out lanes 0..3 = horizontal sums of v0..v3.
inline __m128 hsum4(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    __m256 a = _mm256_add_ps(_mm256_unpacklo_ps(v0, v1), _mm256_unpackhi_ps(v0, v1));
    __m256 b = _mm256_add_ps(_mm256_unpacklo_ps(v2, v3), _mm256_unpackhi_ps(v2, v3));
    __m256 c = _mm256_add_ps(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
}

// out[i][j] = x_i . w_j for i < MX (<= 2, so 8 accumulators + loads fit 16 ymm), j < NW.
// Named accumulators (see ukernel).
template <int MX, int NW, int DT>
void dot_t(int64_t K, const float* x, int64_t ldx, const void* w, int64_t ldw, float* out, int64_t ldo) {
#define AV_DECL(i) \
    [[maybe_unused]] __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = c##i##0, c##i##2 = c##i##0, c##i##3 = c##i##0;
    AV_DECL(0) AV_DECL(1)
#undef AV_DECL
    [[maybe_unused]] __m256 w0, w1, w2, w3;
#define AV_LOADW(n)                                       \
    w0 = load8<DT>(w, k, n);                              \
    if constexpr (NW > 1) w1 = load8<DT>(w, ldw + k, n);     \
    if constexpr (NW > 2) w2 = load8<DT>(w, 2 * ldw + k, n); \
    if constexpr (NW > 3) w3 = load8<DT>(w, 3 * ldw + k, n);
#define AV_ROW(i, n)                                                         \
    if constexpr (MX > i) {                                                  \
        const __m256 xv = load8<AV_F32>(x, i * ldx + k, n);                  \
        c##i##0 = _mm256_fmadd_ps(xv, w0, c##i##0);                          \
        if constexpr (NW > 1) c##i##1 = _mm256_fmadd_ps(xv, w1, c##i##1);    \
        if constexpr (NW > 2) c##i##2 = _mm256_fmadd_ps(xv, w2, c##i##2);    \
        if constexpr (NW > 3) c##i##3 = _mm256_fmadd_ps(xv, w3, c##i##3);    \
    }
    // Weight rows are read once from memory: prefetch ahead (see gemm-avx512.cc).
    constexpr int64_t kAhead = 64;
    constexpr int64_t esize = DT == AV_F32 ? 4 : 2;
    const char* wb = static_cast<const char*>(w);
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        if ((k & 15) == 0)
            for (int j = 0; j < NW; ++j) _mm_prefetch(wb + (j * ldw + k + kAhead) * esize, _MM_HINT_T0);
        AV_LOADW(8)
        AV_ROW(0, 8) AV_ROW(1, 8)
    }
    if (k < K) {
        const int n = static_cast<int>(K - k);
        AV_LOADW(n)
        AV_ROW(0, n) AV_ROW(1, n)
    }
#undef AV_LOADW
#undef AV_ROW
    const __m128i om = _mm_cmpgt_epi32(_mm_set1_epi32(NW), _mm_setr_epi32(0, 1, 2, 3));
#define AV_OUT(i) \
    if constexpr (MX > i) _mm_maskstore_ps(out + i * ldo, om, hsum4(c##i##0, c##i##1, c##i##2, c##i##3));
    AV_OUT(0) AV_OUT(1)
#undef AV_OUT
}

template <int DT>
void dot_dt(int64_t K, const float* x, int64_t ldx, int mx, const void* w, int64_t ldw, int nw, float* out,
            int64_t ldo) {
    using fn = void (*)(int64_t, const float*, int64_t, const void*, int64_t, float*, int64_t);
    static constexpr fn table[2][4] = {
        {dot_t<1, 1, DT>, dot_t<1, 2, DT>, dot_t<1, 3, DT>, dot_t<1, 4, DT>},
        {dot_t<2, 1, DT>, dot_t<2, 2, DT>, dot_t<2, 3, DT>, dot_t<2, 4, DT>},
    };
    for (int i = 0; i < mx; i += 2) {
        const int m = min_i(mx - i, 2);
        table[m - 1][nw - 1](K, x + i * ldx, ldx, w, ldw, out + i * ldo, ldo);
    }
}

void dot(int64_t K, const float* x, int64_t ldx, int mx, const void* w, av_dtype wt, int64_t ldw, int nw,
         float* out, int64_t ldo) {
    switch (wt) {
        case AV_F16: dot_dt<AV_F16>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
        case AV_BF16: dot_dt<AV_BF16>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
        default: dot_dt<AV_F32>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
    }
}

const av_gemm_isa k_isa = {
    "avx2", MR, NR,
    /*kc=*/768, /*nc=*/256, /*mc=*/96,
    /*dot_max_m=*/16,
    kernel, store, pack_rows, pack_im2col, dot,
};

}  // namespace

const av_gemm_isa* av_gemm_isa_avx2() { return &k_isa; }

#endif  // x86_64
