// Internal interface of the CPU GEMM shared by gemm.cc (av_cpu_linear), conv.cc
// (av_cpu_conv2d) and the per-ISA kernel files gemm-avx2.cc / gemm-avx512.cc.
//
// One problem: for each batch item b, C[M, N] = A[M, K] * B[K, N], then the epilogue
//   C = res + gate * act(C + bias).
// A is always given as rows ([M, K], K contiguous, f32/f16/bf16). B is given either as rows of
// B^T ([N, K], the av_linear weight layout) or as an implicit im2col of a [Cin, H, W] image
// (av_conv2d), so no im2col matrix is ever materialised.
//
// The driver (gemm.cc) follows BLIS: A is packed once into MR-row panels over all of K, B is
// packed per (KC x NC) block into NR-column panels, and a register-tiled micro-kernel
// multiplies one MR x KC panel of A by one KC x NR panel of B. Packing converts f16/bf16 to
// f32, so the micro-kernels only ever see f32.
//
// ISA files must not call inline functions or std:: templates from shared headers: their
// out-of-line copies would be compiled with AVX flags and the linker may pick them for every
// caller (an AVX-512 std::vector::resize running on an AVX2-only machine). They only use
// intrinsics and code in an anonymous namespace, and export one table getter.
#pragma once

#include <cstdint>

#include "../core/tensor.h"

enum av_gemm_src_kind : int32_t {
    AV_GEMM_SRC_ROWS = 0,    // element (r, k) = data[r * ld + k]; dtype f32 | f16 | bf16
    AV_GEMM_SRC_IM2COL = 1,  // B^T of a convolution: element (n, k), see below; f32 only
};

// One operand as the packers read it. For AV_GEMM_SRC_IM2COL, row n = oy * Wo + ox is an
// output pixel and column k = (ci * kh + ky) * kw + kx a tap, so
//   element (n, k) = x[ci, oy*stride - pad_t + ky*dil, ox*stride - pad_l + kx*dil]
// or 0 outside the image.
struct av_gemm_src {
    int32_t kind = AV_GEMM_SRC_ROWS;
    av_dtype dtype = AV_F32;
    const void* data = nullptr;
    int64_t ld = 0;
    int64_t H = 0, W = 0, Wo = 0;
    int32_t kh = 1, kw = 1, stride = 1, dil = 1, pad_t = 0, pad_l = 0;
};

// y = res + gate * act(acc + bias), each term only when its pointer is set.
struct av_gemm_epi {
    const float* bias = nullptr;
    bool bias_per_row = false;  // true: bias[m] (conv: one per output channel); false: bias[n]
    int32_t act = 0;            // av_act
    const float* gate = nullptr;
    int64_t gate_ld = 0;
    int64_t gate_rows_per_group = 1;  // row m uses gate row (m % gate_period) / gate_rows_per_group
    int64_t gate_period = 1;
    const float* res = nullptr;
    int64_t res_ld = 0;
};

// Where one micro-tile goes: rows [m0, m0+rows) and columns [n0, n0+cols) of C. `first`: the
// tile holds no earlier partial sum (overwrite); `last`: the K loop is done (apply the epilogue).
struct av_gemm_tile {
    float* c;  // &C[m0, n0]
    int64_t ldc;
    int64_t m0, n0;
    int rows, cols;
    bool first, last;
};

// The kernels of one SIMD level. MR x NR is the register tile; packed panels of A are laid out
// [K][MR] and of B [kc][NR], zero-padded to full panels.
struct av_gemm_isa {
    const char* name;
    int mr, nr;
    // Cache blocking: kc (depth of one packed block; each extra K block is one more pass over
    // C), nc (columns of B packed per block; kc x nc stays in L2), mc (rows of A per sweep
    // over the B block). Chosen by measurement on the d24 linears (see bench/README.md).
    int kc, nc, mc;
    // Linear problems with M <= dot_max_m rows use `dot` on unpacked weights (GEMV-like,
    // weight-bandwidth bound) instead of packing.
    int dot_max_m;
    // ct[i * NR + j] = sum_{k < kc} a[k * MR + i] * b[k * NR + j] for i < rows, j < cols
    // (entries outside rows x cols are unspecified).
    void (*kernel)(int64_t kc, const float* a, const float* b, float* ct, int rows, int cols);
    // Merges ct (row stride ldct) into C and applies the epilogue when t.last.
    void (*store)(const float* ct, int64_t ldct, const av_gemm_tile& t, const av_gemm_epi& e);
    // dst[k * R + i] = src(r0 + i, k0 + k) for i < rows, 0 for rows <= i < R; k < kc.
    void (*pack_rows)(const av_gemm_src& s, int64_t r0, int rows, int64_t k0, int64_t kc, float* dst, int R);
    // im2col panels: for p < ceil(cols / R), dst[(p * kc + k) * R + j] = src(n0 + p*R + j, k0 + k),
    // zero for n0 + p*R + j >= n0 + cols.
    void (*pack_im2col)(const av_gemm_src& s, int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst,
                        int R);
    // Small-M product without packing: out[i * ldo + j] = dot(x row i, w row j) over K for
    // i < mx (<= 4), j < nw (<= 4). x is f32 with row stride ldx; w is rows of dtype wt.
    void (*dot)(int64_t K, const float* x, int64_t ldx, int mx, const void* w, av_dtype wt, int64_t ldw, int nw,
                float* out, int64_t ldo);
};

const av_gemm_isa* av_gemm_isa_scalar();  // gemm.cc
const av_gemm_isa* av_gemm_isa_avx2();    // gemm-avx2.cc
const av_gemm_isa* av_gemm_isa_avx512();  // gemm-avx512.cc
// The table for av_cpu_simd_level().
const av_gemm_isa* av_gemm_isa_current();

// A batched problem: per batch item b, A_b = a shifted by b * a_bstride elements (0: shared),
// likewise B_b, C_b, res_b.
struct av_gemm_problem {
    int64_t batch = 1, M = 0, N = 0, K = 0;
    av_gemm_src a, b;
    int64_t a_bstride = 0, b_bstride = 0;
    float* c = nullptr;
    int64_t ldc = 0, c_bstride = 0;
    av_gemm_epi epi;
    int64_t res_bstride = 0;
};

// Runs the problem on the CPU pool with the kernels of `isa`. Returns false only when scratch
// memory could not be allocated.
bool av_gemm_run(const av_gemm_problem& p, const av_gemm_isa* isa);
