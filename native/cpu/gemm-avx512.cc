// AVX-512 kernels of the CPU GEMM (compiled with -mavx512f/bw/vl/dq -mfma -mf16c; only called
// when av_cpu_simd_level() says AVX-512). See gemm.h for the driver and the packed layouts.
//
// Micro-kernel: MR = 12 rows x NR = 32 columns (2 zmm) = 24 accumulators; per k it loads two
// B vectors and broadcasts 12 A values, i.e. 24 FMAs per 14 loads. With 2 FMA pipes of 4-cycle
// latency 8 independent chains are needed; 24 keeps both pipes busy with room to spare.
// Edge tiles use instances with fewer rows / one vector so no FMA is spent on padding rows.
//
// In isolation (packed panels in cache) it runs at ~210 GFLOP/s on one Zen 5 core, ~95% of
// the 2 x 16-lane FMA peak.
//
// Nothing here may call inline functions or std:: templates of shared headers (see gemm.h).

#if defined(__x86_64__) || defined(_M_X64)  // elsewhere gemm.cc maps every level to scalar

// GCC 12's AVX-512 intrinsics initialise their "undefined" operands from themselves
// (`__m512 __Y = __Y;`), which -Wall reports at every use (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "gemm.h"

namespace {

constexpr int MR = 12;
constexpr int NR = 32;

inline int min_i(int64_t a, int64_t b) { return static_cast<int>(a < b ? a : b); }

// Lanes [lo, hi) set, clamped to [0, 16].
inline __mmask16 lane_mask(int64_t lo, int64_t hi) {
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    const uint32_t m = ((1u << hi) - 1u) & ~((1u << lo) - 1u);
    return static_cast<__mmask16>(m);
}

// e^x for x in float range: Cephes expf (n = round(x log2 e), r = x - n ln2 in two parts,
// degree-6 polynomial), about 1 ulp; scalef applies 2^n. Inputs are clamped so the result
// stays finite and normal.
inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

// Activations in the forms the scalar path uses (gemm.cc): 0.5(1 + tanh(u)) = sigmoid(2u), so
// GELU_tanh = x / (1 + e^{-2u}), which avoids the cancellation of 1 - 2/(e^{2u} + 1) near 0.
inline __m512 act512(__m512 v, int act) {
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
        case 1: {  // AV_ACT_GELU_TANH
            __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
            __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                     _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
            return _mm512_div_ps(v, _mm512_add_ps(one, exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
        }
        case 2:  // AV_ACT_SILU
            return _mm512_div_ps(v, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        case 3:  // AV_ACT_SIGMOID
            return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        default: return v;
    }
}

// ---- micro-kernel -------------------------------------------------------------------------

// ct[i][j] = sum_k a[k][i] b[k][j] for i < ROWS, j < 16 * NV. A panels have stride MR per k and
// B panels NR, whatever the instance uses. The accumulators are named variables, not an array:
// GCC 12 keeps a __m512 array mirrored in memory (a store per FMA) when it cannot scalarise it.
template <int ROWS, int NV>
void ukernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict ct) {
#define AV_DECL(i) [[maybe_unused]] __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    AV_DECL(0) AV_DECL(1) AV_DECL(2) AV_DECL(3) AV_DECL(4) AV_DECL(5) AV_DECL(6)
    AV_DECL(7) AV_DECL(8) AV_DECL(9) AV_DECL(10) AV_DECL(11) AV_DECL(12) AV_DECL(13)
#undef AV_DECL
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
        // The B micro-panel is streamed once per tile: fetch a few k ahead into L1.
        _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
        const __m512 b0 = _mm512_loadu_ps(b);
        [[maybe_unused]] const __m512 b1 = NV > 1 ? _mm512_loadu_ps(b + 16) : b0;
#define AV_STEP(i)                                                               \
    if constexpr (ROWS > i) {                                                    \
        const __m512 ai = _mm512_set1_ps(a[i]);                                  \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);                              \
        if constexpr (NV > 1) c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);        \
    }
        AV_STEP(0) AV_STEP(1) AV_STEP(2) AV_STEP(3) AV_STEP(4) AV_STEP(5) AV_STEP(6)
        AV_STEP(7) AV_STEP(8) AV_STEP(9) AV_STEP(10) AV_STEP(11) AV_STEP(12) AV_STEP(13)
#undef AV_STEP
        a += MR;
        b += NR;
    }
#define AV_OUT(i)                                                                \
    if constexpr (ROWS > i) {                                                    \
        _mm512_storeu_ps(ct + i * NR, c##i##0);                                  \
        if constexpr (NV > 1) _mm512_storeu_ps(ct + i * NR + 16, c##i##1);       \
    }
    AV_OUT(0) AV_OUT(1) AV_OUT(2) AV_OUT(3) AV_OUT(4) AV_OUT(5) AV_OUT(6)
    AV_OUT(7) AV_OUT(8) AV_OUT(9) AV_OUT(10) AV_OUT(11) AV_OUT(12) AV_OUT(13)
#undef AV_OUT
}

using ukernel_fn = void (*)(int64_t, const float*, const float*, float*);

template <int NV>
constexpr ukernel_fn ukernels_nv[MR + 1] = {nullptr,         ukernel<1, NV>,  ukernel<2, NV>, ukernel<3, NV>,
                                            ukernel<4, NV>,  ukernel<5, NV>,  ukernel<6, NV>, ukernel<7, NV>,
                                            ukernel<8, NV>,  ukernel<9, NV>,  ukernel<10, NV>, ukernel<11, NV>,
                                            ukernel<12, NV>};

void kernel(int64_t kc, const float* a, const float* b, float* ct, int rows, int cols) {
    if (cols > 16)
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
        const __m512 brow = _mm512_set1_ps(bias_row ? e.bias[m] : 0.0f);
        const float* g =
            e.gate ? e.gate + ((m % e.gate_period) / e.gate_rows_per_group) * e.gate_ld + t.n0 : nullptr;
        const float* r = e.res ? e.res + m * e.res_ld + t.n0 : nullptr;
        for (int j = 0; j < t.cols; j += 16) {
            // Full vectors use plain loads: a masked load cannot take its data from the
            // store buffer, and ct was written by the kernel a moment ago.
            const bool full = t.cols - j >= 16;
            const __mmask16 k = lane_mask(0, t.cols - j);
            auto load = [&](const float* ptr) { return full ? _mm512_loadu_ps(ptr) : _mm512_maskz_loadu_ps(k, ptr); };
            __m512 v = load(src + j);
            if (!t.first) v = _mm512_add_ps(v, load(dst + j));
            if (t.last) {
                if (bias_col) v = _mm512_add_ps(v, load(e.bias + t.n0 + j));
                if (bias_row) v = _mm512_add_ps(v, brow);
                v = act512(v, e.act);
                if (g) v = _mm512_mul_ps(v, load(g + j));
                if (r) v = _mm512_add_ps(v, load(r + j));
            }
            if (full)
                _mm512_storeu_ps(dst + j, v);
            else
                _mm512_mask_storeu_ps(dst + j, k, v);
        }
    }
}

// ---- packing ------------------------------------------------------------------------------

// 16 elements of a row as f32; lanes outside `m` are 0 and are not read.
template <int DT>
inline __m512 load16(const void* base, int64_t off, __mmask16 m) {
    if (DT == AV_F32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + off);
    __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + off);
    if (DT == AV_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));  // bf16: high half of f32
}

// In-place 16x16 transpose: r[i] lane j <-> r[j] lane i (unpack, 128-bit-lane shuffles).
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // Now r[4q + s] holds, in each 128-bit lane L, elements s of rows 4q..4q+3 at column 4L+s.
    for (int q = 0; q < 2; ++q)
        for (int s = 0; s < 4; ++s) {
            t[8 * q + s] = _mm512_shuffle_f32x4(r[8 * q + s], r[8 * q + 4 + s], 0x88);
            t[8 * q + 4 + s] = _mm512_shuffle_f32x4(r[8 * q + s], r[8 * q + 4 + s], 0xdd);
        }
    for (int s = 0; s < 8; ++s) {
        r[s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0x88);
        r[8 + s] = _mm512_shuffle_f32x4(t[s], t[8 + s], 0xdd);
    }
}

// dst[k * R + i] = src(r0 + i, k0 + k): blocks of 16 rows x 16 k are loaded row-wise
// (contiguous), transposed in registers and stored as 16 k-rows of the panel.
template <int DT>
void pack_rows_t(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R) {
    // 16 rows are read side by side, 64 bytes each per step: too many streams for the hardware
    // prefetcher, so each row is prefetched 64 elements ahead (measured on weights in DRAM:
    // 7 -> 23 GB/s, about a plain sequential read).
    constexpr int64_t kPackPrefetch = 64;
    constexpr int64_t esize = DT == AV_F32 ? 4 : 2;
    __m512 v[16];
    for (int g = 0; g < R; g += 16) {
        const int gr = min_i(rows - g, 16);
        const __mmask16 sm = lane_mask(0, R - g);
        for (int64_t k = 0; k < kc; k += 16) {
            const int kn = min_i(kc - k, 16);
            const __mmask16 lm = lane_mask(0, kn);
            for (int i = 0; i < 16; ++i) {
                if (i < gr) {
                    const int64_t off = (r0 + g + i) * s.ld + k0 + k;
                    _mm_prefetch(static_cast<const char*>(s.data) + (off + kPackPrefetch) * esize, _MM_HINT_T0);
                    v[i] = load16<DT>(s.data, off, lm);
                } else {
                    v[i] = _mm512_setzero_ps();
                }
            }
            transpose16(v);
            for (int kk = 0; kk < kn; ++kk) _mm512_mask_storeu_ps(dst + (k + kk) * R + g, sm, v[kk]);
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

// Implicit im2col (see gemm.h). Tap-major: for each tap (ci, ky, kx) of the block, every
// panel of R output pixels is filled in turn, so the image is read row by row. A panel that
// lies within one output row reads one input row segment per tap: plain loads inside the
// image, masked loads (stride 1) or masked gathers (stride 2+) where it crosses the zero
// padding. Panels that straddle output rows (images narrower than R) go pixel by pixel.
void pack_im2col(const av_gemm_src& s, int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst, int R) {
    struct panel_info {
        int64_t oy, ox;  // first output pixel
        int pc;          // valid pixels (R except in the last panel)
        bool one_row;
    };
    constexpr int kMaxPanels = 64;
    const float* x = static_cast<const float*>(s.data);
    const int64_t khw = static_cast<int64_t>(s.kh) * s.kw;
    const int64_t np = (cols + R - 1) / R;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
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
                const int64_t ix0 = pi.ox * s.stride + dx;  // input column of the panel's pixel 0
                if (iy < 0 || iy >= s.H) {
                    for (int j = 0; j < R; j += 16) _mm512_storeu_ps(d + j, _mm512_setzero_ps());
                    continue;
                }
                const float* row = plane + iy * s.W;
                if (s.stride == 1) {
                    if (pi.pc == R && ix0 >= 0 && ix0 + R <= s.W) {
                        for (int j = 0; j < R; j += 16) _mm512_storeu_ps(d + j, _mm512_loadu_ps(row + ix0 + j));
                        continue;
                    }
                    // Integer address arithmetic: lanes before the row start are masked off and
                    // never read, but an out-of-range pointer must not be formed.
                    for (int j = 0; j < R; j += 16) {
                        const __mmask16 m = lane_mask(-(ix0 + j), s.W - (ix0 + j)) & lane_mask(0, pi.pc - j);
                        const float* src =
                            reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(row) + (ix0 + j) * 4);
                        _mm512_storeu_ps(d + j, _mm512_maskz_loadu_ps(m, src));
                    }
                } else {
                    for (int j = 0; j < R; j += 16) {
                        // ix = ix0 + (j + lane) * stride; lanes outside [0, W) or past pc are masked.
                        const __m512i ix = _mm512_add_epi32(
                            _mm512_set1_epi32(static_cast<int>(ix0 + static_cast<int64_t>(j) * s.stride)),
                            _mm512_mullo_epi32(lane, _mm512_set1_epi32(s.stride)));
                        __mmask16 m = _mm512_cmpge_epi32_mask(ix, _mm512_setzero_si512()) &
                                      _mm512_cmplt_epi32_mask(ix, _mm512_set1_epi32(static_cast<int>(s.W))) &
                                      lane_mask(0, pi.pc - j);
                        _mm512_storeu_ps(d + j, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ix, row, 4));
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
inline __m128 hsum4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
    // Per 128-bit lane: a = [v0 02, v1 02, v0 13, v1 13] (pairs of elements summed), b likewise.
    __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(v0, v1), _mm512_unpackhi_ps(v0, v1));
    __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(v2, v3), _mm512_unpackhi_ps(v2, v3));
    // Per 128-bit lane: [v0, v1, v2, v3] partial sums; then add the four lanes.
    __m512 c = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 d = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    return _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
}

// out[i][j] = x_i . w_j for i < MX, j < NW along K. Named accumulators (see ukernel).
template <int MX, int NW, int DT>
void dot_t(int64_t K, const float* x, int64_t ldx, const void* w, int64_t ldw, float* out, int64_t ldo) {
#define AV_DECL(i) \
    [[maybe_unused]] __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = c##i##0, c##i##2 = c##i##0, c##i##3 = c##i##0;
    AV_DECL(0) AV_DECL(1) AV_DECL(2) AV_DECL(3)
#undef AV_DECL
    [[maybe_unused]] __m512 w0, w1, w2, w3;
#define AV_LOADW(m)                                        \
    w0 = load16<DT>(w, k, m);                              \
    if constexpr (NW > 1) w1 = load16<DT>(w, ldw + k, m);     \
    if constexpr (NW > 2) w2 = load16<DT>(w, 2 * ldw + k, m); \
    if constexpr (NW > 3) w3 = load16<DT>(w, 3 * ldw + k, m);
#define AV_ROW(i, m)                                                         \
    if constexpr (MX > i) {                                                  \
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);         \
        c##i##0 = _mm512_fmadd_ps(xv, w0, c##i##0);                          \
        if constexpr (NW > 1) c##i##1 = _mm512_fmadd_ps(xv, w1, c##i##1);    \
        if constexpr (NW > 2) c##i##2 = _mm512_fmadd_ps(xv, w2, c##i##2);    \
        if constexpr (NW > 3) c##i##3 = _mm512_fmadd_ps(xv, w3, c##i##3);    \
    }
    // The weight rows are read once from memory: prefetch them ahead of the loads, as the
    // four-row stream alone leaves DRAM bandwidth unused (same distance as the packers).
    constexpr int64_t kAhead = 64;
    constexpr int64_t esize = DT == AV_F32 ? 4 : 2;
    const char* wb = static_cast<const char*>(w);
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        for (int j = 0; j < NW; ++j) _mm_prefetch(wb + (j * ldw + k + kAhead) * esize, _MM_HINT_T0);
        AV_LOADW(0xFFFF)
        AV_ROW(0, 0xFFFF) AV_ROW(1, 0xFFFF) AV_ROW(2, 0xFFFF) AV_ROW(3, 0xFFFF)
    }
    if (k < K) {
        const __mmask16 m = lane_mask(0, K - k);
        AV_LOADW(m)
        AV_ROW(0, m) AV_ROW(1, m) AV_ROW(2, m) AV_ROW(3, m)
    }
#undef AV_LOADW
#undef AV_ROW
    const __mmask8 om = static_cast<__mmask8>((1u << NW) - 1u);
#define AV_OUT(i) \
    if constexpr (MX > i) _mm_mask_storeu_ps(out + i * ldo, om, hsum4(c##i##0, c##i##1, c##i##2, c##i##3));
    AV_OUT(0) AV_OUT(1) AV_OUT(2) AV_OUT(3)
#undef AV_OUT
}

template <int DT>
void dot_dt(int64_t K, const float* x, int64_t ldx, int mx, const void* w, int64_t ldw, int nw, float* out,
            int64_t ldo) {
    using fn = void (*)(int64_t, const float*, int64_t, const void*, int64_t, float*, int64_t);
    static constexpr fn table[4][4] = {
        {dot_t<1, 1, DT>, dot_t<1, 2, DT>, dot_t<1, 3, DT>, dot_t<1, 4, DT>},
        {dot_t<2, 1, DT>, dot_t<2, 2, DT>, dot_t<2, 3, DT>, dot_t<2, 4, DT>},
        {dot_t<3, 1, DT>, dot_t<3, 2, DT>, dot_t<3, 3, DT>, dot_t<3, 4, DT>},
        {dot_t<4, 1, DT>, dot_t<4, 2, DT>, dot_t<4, 3, DT>, dot_t<4, 4, DT>},
    };
    table[mx - 1][nw - 1](K, x, ldx, w, ldw, out, ldo);
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
    "avx512", MR, NR,
    /*kc=*/1536, /*nc=*/128, /*mc=*/120,
    /*dot_max_m=*/16,
    kernel, store, pack_rows, pack_im2col, dot,
};

}  // namespace

const av_gemm_isa* av_gemm_isa_avx512() { return &k_isa; }

#pragma GCC diagnostic pop
#endif  // x86_64
