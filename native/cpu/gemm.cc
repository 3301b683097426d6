// av_cpu_linear and the CPU GEMM driver shared with conv.cc (compiled with default flags: the
// SIMD level is chosen here at run time, the kernels live in gemm-avx2.cc / gemm-avx512.cc).
//
// Algorithm (BLIS, Van Zee & van de Geijn 2015; see gemm.h for the layouts):
//   1. Pack all of A once into MR-row panels over the full K ([panel][K][MR], f32).
//   2. Split C into tasks: first along N (each task packs only its own columns of B, so no
//      weight is packed twice), then along M when N alone gives too few tasks. Tasks run on
//      av_cpu_parallel_for; there are several per thread so a preempted thread is caught up.
//   3. In a task: for each NC-column chunk, for each KC block of K: pack B (kc x nc, L2) into
//      NR-column panels, then sweep MC-row blocks of A, and inside them each B micro-panel
//      (kc x NR) against the A micro-panels (MR x kc) with the register-tiled micro-kernel.
//      Partial sums over K blocks live in C; the epilogue (bias, act, gate, res) runs on the
//      last K block while the tile is still in L1. The blocking sizes come from the ISA table;
//      a deep kc (1536 for AVX-512: the B micro-panel then streams from L2, which the kernel's
//      prefetch covers) measured faster than L1-sized blocks because C is passed over less.
// Linear problems with only a few rows (M <= isa->dot_max_m, e.g. one token) skip packing:
// they are bound by reading the weights once, so `dot` reads the weight rows in place and
// converts f16/bf16 on the fly.
//
// The scalar kernels below are the portable fallback (AV_SIMD=scalar or non-x86): same driver,
// plain loops the compiler may vectorise with the baseline ISA.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "../core/ops-check.h"
#include "backend-cpu.h"
#include "gemm.h"

namespace {

// ---- portable scalar kernels ---------------------------------------------------------------

constexpr int S_MR = 4;
constexpr int S_NR = 8;

inline float act_scalar(float v, int act) {
    switch (act) {
        case AV_ACT_GELU_TANH: {
            // 0.5(1 + tanh(u)) == 1 / (1 + e^{-2u}); same form as the SIMD kernels.
            float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            return v / (1.0f + std::exp(-2.0f * u));
        }
        case AV_ACT_SILU: return v / (1.0f + std::exp(-v));
        case AV_ACT_SIGMOID: return 1.0f / (1.0f + std::exp(-v));
        default: return v;
    }
}

void s_kernel(int64_t kc, const float* a, const float* b, float* ct, int rows, int cols) {
    // Panels are zero-padded, so the full tile is computed regardless of rows/cols.
    float acc[S_MR][S_NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
        for (int i = 0; i < S_MR; ++i) {
            const float ai = a[i];
            for (int j = 0; j < S_NR; ++j) acc[i][j] += ai * b[j];
        }
        a += S_MR;
        b += S_NR;
    }
    for (int i = 0; i < S_MR; ++i)
        for (int j = 0; j < S_NR; ++j) ct[i * S_NR + j] = acc[i][j];
}

void s_store(const float* ct, int64_t ldct, const av_gemm_tile& t, const av_gemm_epi& e) {
    for (int i = 0; i < t.rows; ++i) {
        const int64_t m = t.m0 + i;
        const float* src = ct + i * ldct;
        float* dst = t.c + i * t.ldc;
        const float* g =
            e.gate ? e.gate + ((m % e.gate_period) / e.gate_rows_per_group) * e.gate_ld + t.n0 : nullptr;
        const float* r = e.res ? e.res + m * e.res_ld + t.n0 : nullptr;
        for (int j = 0; j < t.cols; ++j) {
            float v = src[j];
            if (!t.first) v += dst[j];
            if (t.last) {
                if (e.bias) v += e.bias_per_row ? e.bias[m] : e.bias[t.n0 + j];
                v = act_scalar(v, e.act);
                if (g) v *= g[j];
                if (r) v += r[j];
            }
            dst[j] = v;
        }
    }
}

template <int DT>
inline float s_load(const void* base, int64_t i) {
    if (DT == AV_F32) return static_cast<const float*>(base)[i];
    if (DT == AV_F16) return av_f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    return av_bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
}

template <int DT>
void s_pack_rows_t(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R) {
    for (int i = 0; i < R; ++i) {
        if (i < rows) {
            const int64_t base = (r0 + i) * s.ld + k0;
            for (int64_t k = 0; k < kc; ++k) dst[k * R + i] = s_load<DT>(s.data, base + k);
        } else {
            for (int64_t k = 0; k < kc; ++k) dst[k * R + i] = 0.0f;
        }
    }
}

void s_pack_rows(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R) {
    switch (s.dtype) {
        case AV_F16: s_pack_rows_t<AV_F16>(s, r0, rows, k0, kc, dst, R); break;
        case AV_BF16: s_pack_rows_t<AV_BF16>(s, r0, rows, k0, kc, dst, R); break;
        default: s_pack_rows_t<AV_F32>(s, r0, rows, k0, kc, dst, R); break;
    }
}

void s_pack_im2col(const av_gemm_src& s, int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst, int R) {
    const float* x = static_cast<const float*>(s.data);
    const int64_t khw = static_cast<int64_t>(s.kh) * s.kw;
    const int64_t np = (cols + R - 1) / R;
    for (int64_t p = 0; p < np; ++p) {
        float* d = dst + p * kc * R;
        for (int j = 0; j < R; ++j) {
            const int64_t n = n0 + p * R + j;
            if (n >= n0 + cols) {
                for (int64_t kk = 0; kk < kc; ++kk) d[kk * R + j] = 0.0f;
                continue;
            }
            const int64_t oy = n / s.Wo, ox = n % s.Wo;
            for (int64_t kk = 0; kk < kc; ++kk) {
                const int64_t k = k0 + kk;
                const int64_t ci = k / khw;
                const int64_t ky = (k % khw) / s.kw, kx = k % s.kw;
                const int64_t iy = oy * s.stride - s.pad_t + ky * s.dil;
                const int64_t ix = ox * s.stride - s.pad_l + kx * s.dil;
                float v = 0.0f;
                if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) v = x[(ci * s.H + iy) * s.W + ix];
                d[kk * R + j] = v;
            }
        }
    }
}

template <int DT>
void s_dot_t(int64_t K, const float* x, int64_t ldx, int mx, const void* w, int64_t ldw, int nw, float* out,
             int64_t ldo) {
    for (int j = 0; j < nw; ++j) {
        for (int i = 0; i < mx; ++i) {
            const float* xr = x + i * ldx;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; ++k) acc += xr[k] * s_load<DT>(w, j * ldw + k);
            out[i * ldo + j] = acc;
        }
    }
}

void s_dot(int64_t K, const float* x, int64_t ldx, int mx, const void* w, av_dtype wt, int64_t ldw, int nw,
           float* out, int64_t ldo) {
    switch (wt) {
        case AV_F16: s_dot_t<AV_F16>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
        case AV_BF16: s_dot_t<AV_BF16>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
        default: s_dot_t<AV_F32>(K, x, ldx, mx, w, ldw, nw, out, ldo); break;
    }
}

const av_gemm_isa k_scalar = {
    "scalar", S_MR, S_NR,
    /*kc=*/256, /*nc=*/256, /*mc=*/64,
    /*dot_max_m=*/4,
    s_kernel, s_store, s_pack_rows, s_pack_im2col, s_dot,
};

// ---- driver --------------------------------------------------------------------------------

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// 64-byte aligned float scratch (packed panels are read with full-vector loads).
struct av_scratch {
    float* p = nullptr;
    size_t cap = 0;
    av_scratch() = default;
    av_scratch(const av_scratch&) = delete;
    av_scratch& operator=(const av_scratch&) = delete;
    ~av_scratch() { std::free(p); }
    float* get(size_t n) {
        if (n > cap) {
            std::free(p);
            size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
            p = static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
            cap = p ? n : 0;
        }
        return p;
    }
};

// Per-thread buffer for packed B blocks (at most kc x nc floats, ~0.5 MB): kept across calls
// so the hot path does not allocate.
thread_local av_scratch tl_bpack;

// Per-calling-thread buffer for packed A. A fresh multi-MB allocation per call is mmap'ed and
// page-faulted anew every time (~6% of a 1024x1536x1536 GEMM); buffers up to this size are
// kept instead (the d24 linears need at most 2050 x 6144 floats = 50 MB, so the largest
// problems still allocate, where the faults are a smaller share of the work).
constexpr size_t kApackRetainFloats = size_t(8) << 20;  // 32 MB
thread_local av_scratch tl_apack;

size_t src_elem_bytes(const av_gemm_src& s) { return av_dtype_size(s.dtype); }

av_gemm_src src_at(const av_gemm_src& s, int64_t offset_elems) {
    av_gemm_src r = s;
    r.data = static_cast<const uint8_t*>(s.data) + offset_elems * static_cast<int64_t>(src_elem_bytes(s));
    return r;
}

av_gemm_epi epi_at(const av_gemm_epi& e, int64_t res_offset) {
    av_gemm_epi r = e;
    if (r.res) r.res += res_offset;
    return r;
}

// Few rows: weights read in place, 4 weight rows x up to 4 x rows per dot() call.
constexpr int64_t kDotMaxRows = 64;  // rows of the per-task output tile below

void run_dot(const av_gemm_problem& p, const av_gemm_isa* isa) {
    constexpr int NCD = 64;  // output columns per task (and per epilogue call)
    const int64_t nch = ceil_div(p.N, NCD);
    const size_t wbytes = src_elem_bytes(p.b);
    av_cpu_parallel_for(p.batch * nch, 1, [&](int64_t t0, int64_t t1) {
        alignas(64) float ct[kDotMaxRows * NCD];
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t b = t / nch;
            const int64_t n0 = (t % nch) * NCD;
            const int nc = static_cast<int>(std::min<int64_t>(NCD, p.N - n0));
            const float* x = static_cast<const float*>(p.a.data) + b * p.a_bstride;
            const uint8_t* w = static_cast<const uint8_t*>(p.b.data) + (b * p.b_bstride) * wbytes;
            for (int j = 0; j < nc; j += 4) {
                const void* wj = w + (n0 + j) * p.b.ld * wbytes;
                for (int64_t i = 0; i < p.M; i += 4)
                    isa->dot(p.K, x + i * p.a.ld, p.a.ld, static_cast<int>(std::min<int64_t>(4, p.M - i)), wj,
                             p.b.dtype, p.b.ld, std::min(4, nc - j), ct + i * NCD + j, NCD);
            }
            av_gemm_tile tile{p.c + b * p.c_bstride + n0, p.ldc, 0, n0, static_cast<int>(p.M), nc, true, true};
            isa->store(ct, NCD, tile, epi_at(p.epi, b * p.res_bstride));
        }
    });
}

bool ranges_overlap(const void* a, size_t an, const void* b, size_t bn) {
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
    return a0 < b0 + bn && b0 < a0 + an;
}

bool run_packed(const av_gemm_problem& p_in, const av_gemm_isa* isa) {
    av_gemm_problem p = p_in;
    const int MR = isa->mr, NR = isa->nr;
    const int64_t M = p.M, N = p.N, K = p.K;

    // K blocks of equal size (a multiple of 8) so no block is a sliver.
    int64_t nkb = ceil_div(K, isa->kc);
    const int64_t kc = ceil_div(ceil_div(K, nkb), 8) * 8;
    nkb = ceil_div(K, kc);

    // Partial sums are kept in C between K blocks; when res is the same memory they would
    // overwrite it before the epilogue reads it, so read res from a copy instead.
    std::unique_ptr<float[]> res_copy;
    if (p.epi.res && nkb > 1) {
        const size_t span_c = ((p.batch - 1) * p.c_bstride + (M - 1) * p.ldc + N) * sizeof(float);
        const size_t span_r = ((p.batch - 1) * p.res_bstride + (M - 1) * p.epi.res_ld + N) * sizeof(float);
        if (ranges_overlap(p.c, span_c, p.epi.res, span_r)) {
            res_copy.reset(new (std::nothrow) float[static_cast<size_t>(p.batch * M * N)]);
            if (!res_copy) return false;
            for (int64_t b = 0; b < p.batch; ++b)
                for (int64_t m = 0; m < M; ++m)
                    std::memcpy(res_copy.get() + (b * M + m) * N, p.epi.res + b * p.res_bstride + m * p.epi.res_ld,
                                N * sizeof(float));
            p.epi.res = res_copy.get();
            p.epi.res_ld = N;
            p.res_bstride = M * N;
        }
    }

    // 1. A, packed once: [item][panel][K][MR].
    const int64_t pm = ceil_div(M, MR);
    const int64_t na = p.a_bstride ? p.batch : 1;
    const int64_t panel_elems = K * MR;
    const size_t ap_n = static_cast<size_t>(na * pm * panel_elems);
    av_scratch ap_big;
    float* ap = ap_n <= kApackRetainFloats ? tl_apack.get(ap_n) : ap_big.get(ap_n);
    if (ap == nullptr) return false;
    av_cpu_parallel_for(na * pm, std::max<int64_t>(1, 32768 / panel_elems), [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t b = t / pm, q = t % pm;
            isa->pack_rows(src_at(p.a, b * p.a_bstride), q * MR, static_cast<int>(std::min<int64_t>(MR, M - q * MR)),
                           0, K, ap + t * panel_elems, MR);
        }
    });

    // 2. Task grid: ~4 tasks per thread, none below ~2 MFLOP (a parallel region costs ~µs).
    const int64_t pn = ceil_div(N, NR);
    const int threads = av_cpu_num_threads();
    const double flops = 2.0 * static_cast<double>(p.batch) * M * N * K;
    int64_t target = threads <= 1 ? 1 : 4 * threads;
    target = std::max<int64_t>(1, std::min<int64_t>(target, static_cast<int64_t>(flops / 2e6)));
    const int64_t per_item = std::max<int64_t>(1, ceil_div(target, p.batch));
    int64_t nt_n = std::min(pn, per_item);
    const int64_t cpt = ceil_div(pn, nt_n);  // column panels per task
    nt_n = ceil_div(pn, cpt);
    int64_t nt_m = std::min(pm, ceil_div(per_item, nt_n));
    const int64_t rpt = ceil_div(pm, nt_m);  // row panels per task
    nt_m = ceil_div(pm, rpt);

    std::atomic<bool> failed{false};
    av_cpu_parallel_for(p.batch * nt_m * nt_n, 1, [&](int64_t t0, int64_t t1) {
        alignas(64) float ct[16 * 64];  // one MR x NR tile (MR <= 16, NR <= 64)
        for (int64_t t = t0; t < t1; ++t) {
            const int64_t b = t / (nt_m * nt_n);
            const int64_t tm = (t / nt_n) % nt_m, tn = t % nt_n;
            const int64_t m_lo = tm * rpt * MR, m_hi = std::min(M, (tm + 1) * rpt * MR);
            const int64_t n_lo = tn * cpt * NR, n_hi = std::min(N, (tn + 1) * cpt * NR);
            // Even NC chunks, whole panels.
            const int64_t nchunks = ceil_div(n_hi - n_lo, isa->nc);
            const int64_t ncb = ceil_div(ceil_div(n_hi - n_lo, nchunks), NR) * NR;
            float* bp = tl_bpack.get(static_cast<size_t>(kc * ncb));
            if (bp == nullptr) {
                failed = true;
                return;
            }
            const av_gemm_src bsrc = src_at(p.b, b * p.b_bstride);
            const float* ap_b = ap + (p.a_bstride ? b : 0) * pm * panel_elems;
            float* c_b = p.c + b * p.c_bstride;
            const av_gemm_epi epi = epi_at(p.epi, b * p.res_bstride);
            for (int64_t jc = n_lo; jc < n_hi; jc += ncb) {
                const int64_t nc = std::min(ncb, n_hi - jc);
                const int64_t npan = ceil_div(nc, NR);
                for (int64_t kb = 0; kb < nkb; ++kb) {
                    const int64_t k0 = kb * kc, kcur = std::min(kc, K - k0);
                    if (bsrc.kind == AV_GEMM_SRC_IM2COL) {
                        isa->pack_im2col(bsrc, jc, nc, k0, kcur, bp, NR);
                    } else {
                        for (int64_t q = 0; q < npan; ++q)
                            isa->pack_rows(bsrc, jc + q * NR, static_cast<int>(std::min<int64_t>(NR, nc - q * NR)), k0,
                                           kcur, bp + q * kcur * NR, NR);
                    }
                    for (int64_t ic = m_lo; ic < m_hi; ic += isa->mc) {
                        const int64_t mh = std::min(ic + isa->mc, m_hi);
                        for (int64_t q = 0; q < npan; ++q) {
                            const float* bq = bp + q * kcur * NR;
                            const int cols = static_cast<int>(std::min<int64_t>(NR, nc - q * NR));
                            for (int64_t ir = ic; ir < mh; ir += MR) {
                                const int rows = static_cast<int>(std::min<int64_t>(MR, M - ir));
                                // The C tile was last touched a whole K block ago and is cold:
                                // start fetching it now so it arrives while the kernel runs
                                // (without this the merge in store() stalls on every row).
                                float* ctile = c_b + ir * p.ldc + jc + q * NR;
                                for (int i = 0; i < rows; ++i)
                                    for (int j = 0; j < cols; j += 16) __builtin_prefetch(ctile + i * p.ldc + j, 1);
                                isa->kernel(kcur, ap_b + (ir / MR) * panel_elems + k0 * MR, bq, ct, rows, cols);
                                av_gemm_tile tile{ctile, p.ldc, ir, jc + q * NR, rows, cols, kb == 0, kb == nkb - 1};
                                isa->store(ct, NR, tile, epi);
                            }
                        }
                    }
                }
            }
        }
    });
    return !failed;
}

}  // namespace

const av_gemm_isa* av_gemm_isa_scalar() { return &k_scalar; }

#if !(defined(__x86_64__) || defined(_M_X64))
// The SIMD kernel files are x86-only; elsewhere every level maps to the portable kernels.
const av_gemm_isa* av_gemm_isa_avx2() { return &k_scalar; }
const av_gemm_isa* av_gemm_isa_avx512() { return &k_scalar; }
#endif  // !x86_64

const av_gemm_isa* av_gemm_isa_current() {
    switch (av_cpu_simd_level()) {
        case AV_SIMD_AVX512: return av_gemm_isa_avx512();
        case AV_SIMD_AVX2: return av_gemm_isa_avx2();
        default: return av_gemm_isa_scalar();
    }
}

bool av_gemm_run(const av_gemm_problem& p, const av_gemm_isa* isa) {
    if (p.batch <= 0 || p.M <= 0 || p.N <= 0 || p.K <= 0) return true;
    if (p.b.kind == AV_GEMM_SRC_ROWS && p.a.kind == AV_GEMM_SRC_ROWS && p.a.dtype == AV_F32 &&
        p.M <= isa->dot_max_m && p.M <= kDotMaxRows) {
        run_dot(p, isa);
        return true;
    }
    return run_packed(p, isa);
}

// ---- av_cpu_linear -------------------------------------------------------------------------

av_status av_cpu_linear(const av_linear_params& p) {
    AV_TRY(av_check_linear(p));
    const int64_t K = p.x.ne[0], M = p.x.ne[1], batch = p.x.ne[2] * p.x.ne[3];
    const int64_t N = p.w.ne[1], batch_w = p.w.ne[2] * p.w.ne[3];

    av_gemm_problem g;
    g.K = K;
    g.N = N;
    g.a.dtype = AV_F32;
    g.a.data = p.x.data;
    g.a.ld = K;
    g.b.dtype = p.w.dtype;
    g.b.data = p.w.data;
    g.b.ld = K;
    g.c = static_cast<float*>(p.y.data);
    g.ldc = N;
    if (batch_w == 1) {
        // Shared weights: one GEMM over all batch*M rows; the gate repeats every M rows.
        g.batch = 1;
        g.M = batch * M;
    } else {
        g.batch = batch;
        g.M = M;
        g.a_bstride = M * K;
        g.b_bstride = N * K;
        g.c_bstride = M * N;
        g.res_bstride = M * N;
    }
    g.epi.bias = av_tensor_present(p.bias) ? static_cast<const float*>(p.bias.data) : nullptr;
    g.epi.act = p.act;
    if (av_tensor_present(p.gate)) {
        g.epi.gate = static_cast<const float*>(p.gate.data);
        g.epi.gate_ld = N;
        g.epi.gate_rows_per_group = p.rows_per_group;
        g.epi.gate_period = M;
    }
    if (av_tensor_present(p.res)) {
        g.epi.res = static_cast<const float*>(p.res.data);
        g.epi.res_ld = N;
    }
    if (!av_gemm_run(g, av_gemm_isa_current()))
        return av_status::error(AV_ERR_OOM, "linear: out of memory for packing buffers (M=" + std::to_string(M) +
                                                ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ")");
    return av_status::success();
}
