// Attention CPU ops (core/ops.h; spec 4.2, 4.5, 11.4; STYLE rule 5).
//
// av_cpu_qkv_prep: splits qkv [R, L, 3, H, D] per token, L2-normalises q and k per head
// (q also times q_scale[h]), applies the 2-D RoPE and writes q_out [R, H, L, D] and the k/v
// caches [R, H, n_ctx, D] at kv_pos. RoPE angles are computed in fp32 exactly as the PyTorch
// reference does (see rope_table below); cos/sin are evaluated in double and rounded, i.e. the
// correctly rounded fp32 cos/sin of the fp32 angle.
//
// av_cpu_attn: flash-style attention. One task = (row r, head h, block of k_bq = 32 queries);
// tasks are spread over the pool. A task walks the keys in tiles of k_bk = 64 and keeps, per
// query, the fp32 running max m, running sum l and an unnormalised output row acc [D]:
//   S^T = K_tile Q^T       [bk, 32]  (keys are rows, queries columns; q pre-scaled by `scale`)
//   S^T[j][i] += beta_h * key_bias[r % Rb, j]; -inf where q_lvl[i] < k_lvl[j]
//   m' = max(m, max_j S), alpha = exp(m - m'), P = exp(S - m'), l = alpha*l + sum_j P,
//   acc = alpha*acc + P V_tile
// and finally o = acc / l, or 0 where l == 0 (every key masked). Keys at -inf contribute
// exp(-inf) = 0 exactly; a query whose keys are all masked so far keeps m = -inf and is
// computed against 0 instead, so no -inf - -inf NaN is ever formed.
// The transposed score tile makes every softmax step a contiguous loop over the queries, and
// both products run through one register-blocked micro-kernel (4 rows x 2 vectors of C held in
// registers over a K loop of broadcast-FMAs): 32 columns per block with AVX-512, 16 with AVX2,
// 8 with SSE2. K and V are read straight from the cache: K rows feed the broadcasts, V rows
// are the contiguous operand. A block of fewer than 32 queries computes only as many score
// columns as it needs, rounded up to 8 (scale 0 of the model has a single query).
// Tasks are compiled per ISA level (baseline, AVX2+FMA, AVX-512) and picked at run time.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../core/ops-check.h"
#include "backend-cpu.h"
#include "simd.h"

namespace {

// ---------------------------------------------------------------------------------------------
// qkv_prep

// Per token l and pair p < D/2: cos and sin of the RoPE angle, computed like the reference
// (spec 4.2; the usual `1.0 / (base ** (arange(0, D, 4)[:D/4].float() / D))` in fp32):
//   e_i     = fp32(4i) / fp32(D)                 fp32 division
//   theta_i = 1.0f / fp32(base ^ e_i)            pow correctly rounded to fp32, fp32 division
//   phi_p   = fp32(tx * theta_p)      p <  D/4   one fp32 multiply
//   phi_p   = fp32(ty * theta_{p-D/4}) p >= D/4
//   cos, sin = fp32(cos(phi)), fp32(sin(phi))   (evaluated in double, then rounded)
// theta holds D/4 floats of scratch; cs and sn [L, D/2].
void rope_table(const float* pos, int64_t L, int64_t D, float base, float* theta, float* cs, float* sn) {
    const int64_t n4 = D / 4, half = D / 2;
    for (int64_t i = 0; i < n4; ++i) {
        const float e = static_cast<float>(4 * i) / static_cast<float>(D);
        const float pw = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
        theta[i] = 1.0f / pw;
    }
    av_cpu_parallel_for(L, 16, [&](int64_t l0, int64_t l1) {
        for (int64_t l = l0; l < l1; ++l) {
            const float tx = pos[2 * l], ty = pos[2 * l + 1];
            for (int64_t p = 0; p < half; ++p) {
                const float phi = p < n4 ? tx * theta[p] : ty * theta[p - n4];
                cs[l * half + p] = static_cast<float>(std::cos(static_cast<double>(phi)));
                sn[l * half + p] = static_cast<float>(std::sin(static_cast<double>(phi)));
            }
        }
    });
}

// 1 / max(||x||, 1e-12) for one head vector, summed in double.
float inv_norm(const float* x, int64_t D) {
    double s = 0.0;
    for (int64_t d = 0; d < D; ++d) s += static_cast<double>(x[d]) * x[d];
    return static_cast<float>(1.0 / std::max(std::sqrt(s), 1e-12));
}

// dst = rope(src * mul): pairs (2p, 2p+1) rotate by the token's angle p.
void scale_rotate(const float* src, float mul, const float* cs, const float* sn, int64_t D, float* dst) {
    for (int64_t p = 0; p < D / 2; ++p) {
        const float a = src[2 * p] * mul, b = src[2 * p + 1] * mul;
        dst[2 * p] = a * cs[p] - b * sn[p];
        dst[2 * p + 1] = a * sn[p] + b * cs[p];
    }
}

void scale_copy(const float* src, float mul, int64_t D, float* dst) {
    for (int64_t d = 0; d < D; ++d) dst[d] = src[d] * mul;
}

// ---------------------------------------------------------------------------------------------
// attn

constexpr int64_t k_bq = 32;  // queries per task: the columns of the score tile
constexpr int64_t k_bk = 64;  // keys per tile: the rows of the score tile
constexpr int k_nr = 4;       // micro-kernel rows

struct attn_args {
    const float* q;         // [R, H, Lq, D]
    const void* k;          // [R, H, n_ctx, D] f32, or bf16 when kv_bf16
    const void* v;
    bool kv_bf16;
    const float* key_bias;  // [Rb, n_ctx] or null
    const float* kb_beta;   // [H] or null (= 1)
    const int32_t* q_lvl;   // [Lq] or null
    const int32_t* k_lvl;   // [n_ctx] or null
    float* o;               // [R, Lq, H, D]
    int64_t R, H, Lq, D, n_ctx, n_kv, Rb;
    float scale;
};

// Floats of scratch one task needs (qt, st, acc, per-query vectors, bias tile, and the K and V
// tiles widened to f32 for a bf16 cache).
int64_t attn_scratch_floats(int64_t D) { return D * k_bq + k_bk * k_bq + k_bq * D + 5 * k_bq + k_bk + 2 * k_bk * D; }

// n bf16 values widened to f32 (exact: the bf16 bits are the f32's high half).
AV_INLINE void widen_bf16(const uint16_t* __restrict src, int64_t n, float* __restrict dst) {
    AV_IVDEP
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(dst + i, &u, sizeof(float));
    }
}

// Float vectors of 4, 8 and 16 lanes (GCC/Clang vector extensions): they lower to SSE, AVX or
// AVX-512 registers according to the target of the clone they are inlined into. Memory is
// accessed through memcpy (unaligned loads/stores): alignment attributes on a typedef are
// dropped when it is a template argument.
typedef float av_v4 __attribute__((vector_size(16)));
typedef float av_v8 __attribute__((vector_size(32)));
typedef float av_v16 __attribute__((vector_size(64)));

// C[NR][NV*W] (=|+=) A[NR][K] * B[K][NV*W], W = lanes of V. A element (r, k) is
// A[r*ars + k*aks] (broadcast), B rows are contiguous with stride ldb, C rows have stride
// ldc. The NR x NV accumulator vectors stay in registers across the K loop. Written with
// explicit vectors because GCC 12, given the equivalent scalar loops, vectorises the K loop
// instead for AVX2 (shuffles and spills, 10x slower).
template <int NR, int NV, bool ACC, typename V>
AV_INLINE void mk(int64_t K, const float* __restrict A, int64_t ars, int64_t aks, const float* __restrict B,
                  int64_t ldb, float* __restrict C, int64_t ldc) {
    constexpr int W = sizeof(V) / sizeof(float);
    V c[NR][NV];
    for (int r = 0; r < NR; ++r)
        for (int v = 0; v < NV; ++v) {
            c[r][v] = V{};
            if constexpr (ACC) std::memcpy(&c[r][v], C + r * ldc + v * W, sizeof(V));
        }
    for (int64_t k = 0; k < K; ++k) {
        V b[NV];
        for (int v = 0; v < NV; ++v) std::memcpy(&b[v], B + k * ldb + v * W, sizeof(V));
        for (int r = 0; r < NR; ++r) {
            const float a = A[r * ars + k * aks];
            for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < NR; ++r)
        for (int v = 0; v < NV; ++v) std::memcpy(C + r * ldc + v * W, &c[r][v], sizeof(V));
}

// Column tail (fewer than 4 columns): plain scalar loops.
template <int NR, bool ACC>
AV_INLINE void mk_scalar(int64_t K, const float* A, int64_t ars, int64_t aks, const float* B, int64_t ldb, float* C,
                         int64_t ldc, int64_t nc) {
    for (int r = 0; r < NR; ++r)
        for (int64_t t = 0; t < nc; ++t) {
            float acc = ACC ? C[r * ldc + t] : 0.0f;
            for (int64_t k = 0; k < K; ++k) acc += A[r * ars + k * aks] * B[k * ldb + t];
            C[r * ldc + t] = acc;
        }
}

// C[NR][ncols] in column blocks of 2 V vectors (the widest block), then 8 and 4 columns, then
// scalar for the last < 4 (head dims that are not a multiple of the block).
template <int NR, bool ACC, typename V>
AV_INLINE void mk_cols(int64_t K, const float* A, int64_t ars, int64_t aks, const float* B, int64_t ldb, float* C,
                       int64_t ldc, int64_t ncols) {
    constexpr int64_t NC = 2 * static_cast<int64_t>(sizeof(V) / sizeof(float));
    int64_t c0 = 0;
    for (; c0 + NC <= ncols; c0 += NC) mk<NR, 2, ACC, V>(K, A, ars, aks, B + c0, ldb, C + c0, ldc);
    if constexpr (NC > 8)
        for (; c0 + 8 <= ncols; c0 += 8) mk<NR, 2, ACC, av_v4>(K, A, ars, aks, B + c0, ldb, C + c0, ldc);
    for (; c0 + 4 <= ncols; c0 += 4) mk<NR, 1, ACC, av_v4>(K, A, ars, aks, B + c0, ldb, C + c0, ldc);
    if (c0 < ncols) mk_scalar<NR, ACC>(K, A, ars, aks, B + c0, ldb, C + c0, ldc, ncols - c0);
}

// Runs tasks [t0, t1). scratch holds attn_scratch_floats(D) floats and ql k_bq ints.
template <typename V, bool HAS_MASK>
AV_INLINE void attn_tasks_t(const attn_args& a, float* scratch, int32_t* ql, int64_t t0, int64_t t1) {
    const int64_t D = a.D, H = a.H, Lq = a.Lq;
    const int64_t nqb = (Lq + k_bq - 1) / k_bq;
    float* __restrict qt = scratch;              // [D, k_bq]  scale * Q^T (zero columns past nq)
    float* __restrict st = qt + D * k_bq;        // [k_bk, k_bq] scores, then probabilities
    float* __restrict acc = st + k_bk * k_bq;    // [k_bq, D] unnormalised output rows
    float* __restrict m = acc + k_bq * D;        // [k_bq] running max
    float* __restrict l = m + k_bq;              // [k_bq] running sum
    float* __restrict alpha = l + k_bq;          // [k_bq] rescale of this tile
    float* __restrict msafe = alpha + k_bq;      // [k_bq] max used for exp (0 while all masked)
    float* __restrict tmax = msafe + k_bq;       // [k_bq] max of this tile
    float* __restrict bt = tmax + k_bq;          // [k_bk] bias of this tile's keys
    float* __restrict kw = bt + k_bk;            // [k_bk, D] K tile widened from bf16
    float* __restrict vw = kw + k_bk * D;        // [k_bk, D] V tile widened from bf16

    for (int64_t task = t0; task < t1; ++task) {
        const int64_t r = task / (H * nqb);
        const int64_t h = (task / nqb) % H;
        const int64_t i0 = (task % nqb) * k_bq;
        const int64_t nq = std::min(k_bq, Lq - i0);
        // Score columns computed: the queries rounded up to 8 (a short block, e.g. the single
        // query of scale 0, does not pay for 32 columns); nq4 <= nc query rows run in P V.
        const int64_t nc = std::min(k_bq, (nq + 7) / 8 * 8);
        const int64_t nq4 = (nq + k_nr - 1) / k_nr * k_nr;
        const float* qb = a.q + ((r * H + h) * Lq + i0) * D;
        const int64_t kv_off = (r * H + h) * a.n_ctx * D;  // this (row, head)'s cache rows
        const float* kb = a.kv_bf16 ? nullptr : static_cast<const float*>(a.k) + kv_off;
        const float* vb = a.kv_bf16 ? nullptr : static_cast<const float*>(a.v) + kv_off;
        const float* kbias = a.key_bias ? a.key_bias + (r % a.Rb) * a.n_ctx : nullptr;
        const float beta = a.kb_beta ? a.kb_beta[h] : 1.0f;

        std::memset(qt, 0, sizeof(float) * D * k_bq);
        for (int64_t i = 0; i < nq; ++i)
            for (int64_t d = 0; d < D; ++d) qt[d * k_bq + i] = a.scale * qb[i * D + d];
        std::memset(acc, 0, sizeof(float) * k_bq * D);
        int32_t ql_max = std::numeric_limits<int32_t>::min();
        for (int64_t i = 0; i < nc; ++i) {
            m[i] = k_neg_inf;
            l[i] = 0.0f;
            if constexpr (HAS_MASK) {
                // Padding queries past nq copy a real level; their results are never written.
                ql[i] = a.q_lvl[i0 + std::min(i, nq - 1)];
                ql_max = std::max(ql_max, ql[i]);
            }
        }

        for (int64_t j0 = 0; j0 < a.n_kv; j0 += k_bk) {
            const int64_t bk = std::min(k_bk, a.n_kv - j0);
            if constexpr (HAS_MASK) {
                // Block-causal: a tile whose every key is above every query's level adds nothing.
                int32_t kl_min = std::numeric_limits<int32_t>::max();
                for (int64_t j = 0; j < bk; ++j) kl_min = std::min(kl_min, a.k_lvl[j0 + j]);
                if (ql_max < kl_min) continue;
            }
            // A -inf bias masks the key whatever beta is (0 * -inf would be NaN).
            for (int64_t j = 0; j < bk; ++j) {
                const float b = kbias ? kbias[j0 + j] : 0.0f;
                bt[j] = b == k_neg_inf ? k_neg_inf : beta * b;
            }

            // S^T = K_tile (scale Q)^T: rows are keys (broadcast from the cache), columns queries.
            const float* kt = kb ? kb + j0 * D : kw;
            if (a.kv_bf16) widen_bf16(static_cast<const uint16_t*>(a.k) + kv_off + j0 * D, bk * D, kw);
            int64_t j = 0;
            for (; j + k_nr <= bk; j += k_nr)
                mk_cols<k_nr, false, V>(D, kt + j * D, D, 1, qt, k_bq, st + j * k_bq, k_bq, nc);
            for (; j < bk; ++j) mk_cols<1, false, V>(D, kt + j * D, D, 1, qt, k_bq, st + j * k_bq, k_bq, nc);

            // Bias, mask and the tile max, row by row, vectorised over the queries.
            for (int64_t i = 0; i < nc; ++i) tmax[i] = k_neg_inf;
            for (j = 0; j < bk; ++j) {
                float* __restrict srow = st + j * k_bq;
                const float bj = bt[j];
                if constexpr (HAS_MASK) {
                    const int32_t kl = a.k_lvl[j0 + j];
                    AV_IVDEP
                    for (int64_t i = 0; i < nc; ++i) srow[i] = ql[i] >= kl ? srow[i] + bj : k_neg_inf;
                } else {
                    AV_IVDEP
                    for (int64_t i = 0; i < nc; ++i) srow[i] += bj;
                }
                AV_IVDEP
                for (int64_t i = 0; i < nc; ++i) tmax[i] = srow[i] > tmax[i] ? srow[i] : tmax[i];
            }
            AV_IVDEP
            for (int64_t i = 0; i < nc; ++i) {
                const float mn = tmax[i] > m[i] ? tmax[i] : m[i];
                const float ms = mn == k_neg_inf ? 0.0f : mn;
                alpha[i] = av_expf(m[i] - ms);  // m = -inf (nothing seen yet) gives 0
                m[i] = mn;
                msafe[i] = ms;
                l[i] *= alpha[i];
            }
            for (j = 0; j < bk; ++j) {
                float* __restrict srow = st + j * k_bq;
                AV_IVDEP
                for (int64_t i = 0; i < nc; ++i) {
                    const float pij = av_expf(srow[i] - msafe[i]);
                    srow[i] = pij;
                    l[i] += pij;
                }
            }
            for (int64_t i = 0; i < nq4; ++i) {
                float* __restrict arow = acc + i * D;
                const float al = alpha[i];
                AV_IVDEP
                for (int64_t d = 0; d < D; ++d) arow[d] *= al;
            }

            // acc += P V_tile: rows are queries (P^T read with stride k_bq), columns head dims.
            const float* vt = vb ? vb + j0 * D : vw;
            if (a.kv_bf16) widen_bf16(static_cast<const uint16_t*>(a.v) + kv_off + j0 * D, bk * D, vw);
            for (int64_t i = 0; i < nq4; i += k_nr)
                mk_cols<k_nr, true, V>(bk, st + i, 1, k_bq, vt, D, acc + i * D, D, D);
        }

        for (int64_t i = 0; i < nq; ++i) {
            const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // l == 0: every key masked
            float* __restrict orow = a.o + (((r * Lq) + i0 + i) * H + h) * D;
            const float* arow = acc + i * D;
            for (int64_t d = 0; d < D; ++d) orow[d] = arow[d] * inv;
        }
    }
}

template <typename V>
AV_INLINE void attn_tasks_v(const attn_args& a, float* scratch, int32_t* ql, int64_t t0, int64_t t1) {
    if (a.q_lvl) attn_tasks_t<V, /*HAS_MASK=*/true>(a, scratch, ql, t0, t1);
    else attn_tasks_t<V, /*HAS_MASK=*/false>(a, scratch, ql, t0, t1);
}

#ifdef AV_HAVE_CLONES
// Micro-kernel blocks are 4 rows x 2 vectors: 8 accumulators, plus 2 operand vectors and a
// broadcast, fit the 16 registers of SSE/AVX2 (and leave most of AVX-512's 32 free).
// 32 columns = 2 AVX-512 vectors per row.
AV_TARGET_AVX512 void attn_tasks_avx512(const attn_args& a, float* s, int32_t* ql, int64_t t0, int64_t t1) {
    attn_tasks_v<av_v16>(a, s, ql, t0, t1);
}
// 16 columns = 2 AVX2 vectors per row.
AV_TARGET_AVX2 void attn_tasks_avx2(const attn_args& a, float* s, int32_t* ql, int64_t t0, int64_t t1) {
    attn_tasks_v<av_v8>(a, s, ql, t0, t1);
}
#endif  // AV_HAVE_CLONES
// Baseline SSE2: 8 columns = 2 vectors per row.
void attn_tasks_base(const attn_args& a, float* s, int32_t* ql, int64_t t0, int64_t t1) {
    attn_tasks_v<av_v4>(a, s, ql, t0, t1);
}

void attn_tasks(const attn_args& a, float* s, int32_t* ql, int64_t t0, int64_t t1) {
#ifdef AV_HAVE_CLONES
    switch (av_cpu_simd_level()) {
        case AV_SIMD_AVX512: attn_tasks_avx512(a, s, ql, t0, t1); return;
        case AV_SIMD_AVX2: attn_tasks_avx2(a, s, ql, t0, t1); return;
        default: break;
    }
#endif  // AV_HAVE_CLONES
    attn_tasks_base(a, s, ql, t0, t1);
}

}  // namespace

av_status av_cpu_qkv_prep(const av_qkv_prep_params& p) {
    AV_TRY(av_check_qkv_prep(p));
    const int64_t D = p.q_out.ne[0], L = p.q_out.ne[1], H = p.q_out.ne[2], R = p.q_out.ne[3];
    const int64_t n_ctx = p.k_cache.ne[1];
    const bool l2 = p.l2norm != 0, rope = p.rope != 0;

    const int64_t half = D / 2;
    std::vector<float> table;  // cos [L, D/2] | sin [L, D/2] | theta [D/4]
    if (rope) {
        try {
            table.resize(static_cast<size_t>(2 * L * half + D / 4));
        } catch (const std::bad_alloc&) {
            return av_status::error(AV_ERR_OOM, "qkv_prep: out of memory for the RoPE table");
        }
        rope_table(static_cast<const float*>(p.rope_pos.data), L, D, p.rope_base, table.data() + 2 * L * half,
                   table.data(), table.data() + L * half);
    }
    const float* cs = rope ? table.data() : nullptr;
    const float* sn = rope ? table.data() + L * half : nullptr;
    const float* qkv = static_cast<const float*>(p.qkv.data);
    const float* qs = static_cast<const float*>(p.q_scale.data);
    float* qo = static_cast<float*>(p.q_out.data);
    const bool bf16 = p.k_cache.dtype == AV_BF16;
    const int64_t kv_pos = p.kv_pos;
    av_cpu_parallel_for(R * L, 8, [&](int64_t t0, int64_t t1) {
        // A bf16 cache: k and v are computed in f32 into kv_tmp, then rounded into the cache.
        std::vector<float> kv_tmp(bf16 ? static_cast<size_t>(2 * D) : 0);
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t r = t / L, l = t % L;
            const float* tok = qkv + t * 3 * H * D;  // [3, H, D] of token (r, l)
            const float* c = rope ? cs + l * half : nullptr;
            const float* s = rope ? sn + l * half : nullptr;
            for (int64_t h = 0; h < H; ++h) {
                const float* q = tok + h * D;
                const float* k = tok + (H + h) * D;
                const float* v = tok + (2 * H + h) * D;
                const float qmul = l2 ? inv_norm(q, D) * (qs ? qs[h] : 1.0f) : 1.0f;
                const float kmul = l2 ? inv_norm(k, D) : 1.0f;
                float* qd = qo + ((r * H + h) * L + l) * D;
                const int64_t kv_at = ((r * H + h) * n_ctx + kv_pos + l) * D;  // element offset in the caches
                float* kd = bf16 ? kv_tmp.data() : static_cast<float*>(p.k_cache.data) + kv_at;
                float* vd = bf16 ? kv_tmp.data() + D : static_cast<float*>(p.v_cache.data) + kv_at;
                if (rope) {
                    scale_rotate(q, qmul, c, s, D, qd);
                    scale_rotate(k, kmul, c, s, D, kd);
                } else {
                    scale_copy(q, qmul, D, qd);
                    scale_copy(k, kmul, D, kd);
                }
                std::memcpy(vd, v, sizeof(float) * D);
                if (bf16) {
                    uint16_t* kh = static_cast<uint16_t*>(p.k_cache.data) + kv_at;
                    uint16_t* vh = static_cast<uint16_t*>(p.v_cache.data) + kv_at;
                    for (int64_t d = 0; d < D; ++d) {
                        kh[d] = av_f32_to_bf16(kd[d]);
                        vh[d] = av_f32_to_bf16(vd[d]);
                    }
                }
            }
        }
    });
    return av_status::success();
}

av_status av_cpu_attn(const av_attn_params& p) {
    AV_TRY(av_check_attn(p));
    const int64_t D = p.q.ne[0], Lq = p.q.ne[1], H = p.q.ne[2], R = p.q.ne[3];
    const int64_t n_ctx = p.k.ne[1];
    const int64_t Rb = av_tensor_present(p.key_bias) ? av_tensor_nelements(p.key_bias) / n_ctx : 1;

    attn_args a;
    a.q = static_cast<const float*>(p.q.data);
    a.k = p.k.data;
    a.v = p.v.data;
    a.kv_bf16 = p.k.dtype == AV_BF16;
    a.key_bias = static_cast<const float*>(p.key_bias.data);
    a.kb_beta = static_cast<const float*>(p.kb_beta.data);
    a.q_lvl = static_cast<const int32_t*>(p.q_lvl.data);
    a.k_lvl = static_cast<const int32_t*>(p.k_lvl.data);
    a.o = static_cast<float*>(p.o.data);
    a.R = R;
    a.H = H;
    a.Lq = Lq;
    a.D = D;
    a.n_ctx = n_ctx;
    a.n_kv = p.n_kv;
    a.Rb = Rb;
    a.scale = p.scale;

    const int64_t n_tasks = R * H * ((Lq + k_bq - 1) / k_bq);
    const size_t n_scratch = static_cast<size_t>(attn_scratch_floats(D));
    std::atomic<bool> oom{false};
    av_cpu_parallel_for(n_tasks, 1, [&](int64_t t0, int64_t t1) {
        std::unique_ptr<float[]> scratch(new (std::nothrow) float[n_scratch]);
        std::unique_ptr<int32_t[]> ql(new (std::nothrow) int32_t[k_bq]);
        if (!scratch || !ql) {
            oom = true;
            return;
        }
        attn_tasks(a, scratch.get(), ql.get(), t0, t1);
    });
    if (oom) return av_status::error(AV_ERR_OOM, "attn: out of memory for per-thread scratch");
    return av_status::success();
}
