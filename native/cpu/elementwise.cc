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
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "../core/ops-check.h"
#include "backend-cpu.h"
#include "simd.h"

namespace {

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
    AV_TRY(av_check_modulate(p));
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const int64_t rpg = p.rows_per_group;
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const float* sc = static_cast<const float*>(p.scale.data);
    const float* sh = static_cast<const float*>(p.shift.data);
    av_cpu_parallel_for(M, grain_rows(C), [&](int64_t m0, int64_t m1) { modulate_rows(x, y, sc, sh, C, rpg, m0, m1); });
    return av_status::success();
}

av_status av_cpu_binary(const av_binary_params& p) {
    AV_TRY(av_check_binary(p));
    const int64_t N = p.a.ne[0];
    const int64_t M = av_tensor_nelements(p.a) / N;
    const int64_t Nb = p.b.ne[0];
    const int64_t Mb = av_tensor_nelements(p.b) / Nb;
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
    AV_TRY(av_check_unary(p));
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const int act = p.act;
    av_cpu_parallel_for(av_tensor_nelements(p.x), 16384,
                        [&](int64_t i0, int64_t i1) { unary_range(x, y, act, i0, i1); });
    return av_status::success();
}

av_status av_cpu_softmax(const av_softmax_params& p) {
    AV_TRY(av_check_softmax(p));
    const int64_t N = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / N;
    const float* x = static_cast<const float*>(p.x.data);
    float* y = static_cast<float*>(p.y.data);
    const float scale = p.scale;
    av_cpu_parallel_for(M, grain_rows(N, 4096), [&](int64_t m0, int64_t m1) { softmax_rows(x, y, N, scale, m0, m1); });
    return av_status::success();
}

av_status av_cpu_copy(const av_copy_params& p) {
    AV_TRY(av_check_copy(p));

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
