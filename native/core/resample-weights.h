// Per-axis tap indices and weights of the resampling kernels (spec 2.1, 5.5). Header-only pure
// functions, callable from host C++ and CUDA device code, so that the CPU and CUDA backends use
// identical weight math: a 2-D resample is one 1-D table per axis, applied horizontally first.
//
// - PyTorch bicubic (interpolate(mode='bicubic', align_corners=False), no antialias):
//   aten/src/ATen/native/UpSample.h (area_pixel_compute_source_index, guard_index_and_lambda,
//   get_cubic_upsample_coefficients) and cpu/UpSampleKernel.cpp (HelperInterpCubic). Computed
//   in float as PyTorch does for float tensors (opmath_t = float).
// - Area (interpolate(mode='area') = adaptive_avg_pool): start_index / end_index of
//   aten/src/ATen/native/AdaptivePooling.h, in exact integer arithmetic.
// - Nearest: floor(i * in / out) in exact integer arithmetic (the op contract, ops.h).
// - Pillow bicubic (Image.resize default): precompute_coeffs of libImaging/Resample.c, in
//   double as Pillow computes its weights, returned as float.
//
// Every product that feeds a sum goes through av_mul_rn / av_add_rn: nvcc would otherwise fuse
// them into FMAs (one rounding instead of two) and the device weights would differ in the last
// bit from the host's. Host code is compiled without FMA contraction.
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"

// Correctly rounded multiply and add that are never contracted into an FMA.
AV_HD inline float av_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif  // __CUDA_ARCH__
}

AV_HD inline float av_add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif  // __CUDA_ARCH__
}

AV_HD inline double av_mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif  // __CUDA_ARCH__
}

AV_HD inline double av_add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif  // __CUDA_ARCH__
}

// ---- PyTorch bicubic -----------------------------------------------------------------------

constexpr float AV_BICUBIC_A = -0.75f;

// |x| <= 1 branch of the cubic convolution kernel: ((A + 2) x - (A + 3)) x x + 1.
AV_HD inline float av_bicubic_conv1(float x, float A) {
    return av_add_rn(av_mul_rn(av_mul_rn(av_add_rn(av_mul_rn(A + 2, x), -(A + 3)), x), x), 1.0f);
}

// 1 < |x| < 2 branch: ((A x - 5A) x + 8A) x - 4A.
AV_HD inline float av_bicubic_conv2(float x, float A) {
    return av_add_rn(av_mul_rn(av_add_rn(av_mul_rn(av_add_rn(av_mul_rn(A, x), -5 * A), x), 8 * A), x), -4 * A);
}

// The 4 taps of output index i of an in -> out bicubic resize along one axis: source indices
// x0-1 .. x0+2 clamped to [0, in-1] and their weights. in == out gives the identity (t = 0:
// weights 0, 1, 0, 0 exactly); callers may copy instead.
AV_HD inline void av_bicubic_taps(int64_t i, int64_t in, int64_t out, int64_t idx[4], float w[4]) {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    // Source coordinate of the output pixel's center; it may be negative (no clamp for cubic).
    const float x = av_add_rn(av_mul_rn(scale, static_cast<float>(i) + 0.5f), -0.5f);
    int64_t x0 = static_cast<int64_t>(floorf(x));
    if (x0 > in - 1) x0 = in - 1;
    float t = x - static_cast<float>(x0);
    t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    // PyTorch's order of operations: the far right tap uses (1 - t) + 1, rounded twice.
    const float t1 = 1.0f - t;
    w[0] = av_bicubic_conv2(t + 1.0f, AV_BICUBIC_A);
    w[1] = av_bicubic_conv1(t, AV_BICUBIC_A);
    w[2] = av_bicubic_conv1(t1, AV_BICUBIC_A);
    w[3] = av_bicubic_conv2(t1 + 1.0f, AV_BICUBIC_A);
    for (int k = 0; k < 4; ++k) {
        int64_t j = x0 - 1 + k;
        idx[k] = j < 0 ? 0 : (j > in - 1 ? in - 1 : j);
    }
}

// ---- area (adaptive average pooling) -------------------------------------------------------

// Output index i averages input indices [begin, end) = [floor(i*in/out), ceil((i+1)*in/out)).
// Windows of neighbouring outputs may overlap when out does not divide in.
AV_HD inline void av_area_window(int64_t i, int64_t in, int64_t out, int64_t* begin, int64_t* end) {
    *begin = (i * in) / out;
    *end = ((i + 1) * in + out - 1) / out;
}

// Largest window length over all outputs (a bound for per-output tap storage).
AV_HD inline int64_t av_area_max_taps(int64_t in, int64_t out) { return (in + out - 1) / out + 1; }

// ---- nearest ---------------------------------------------------------------------------------

AV_HD inline int64_t av_nearest_index(int64_t i, int64_t in, int64_t out) {
    int64_t j = (i * in) / out;
    return j > in - 1 ? in - 1 : j;
}

// ---- Pillow bicubic (antialiased, a = -0.5) -------------------------------------------------

// Pillow's bicubic_filter: support 2, a = -0.5.
AV_HD inline double av_pil_bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return av_add_rn(av_mul_rn(av_mul_rn(av_add_rn(av_mul_rn(a + 2.0, x), -(a + 3.0)), x), x), 1.0);
    if (x < 2.0) return av_mul_rn(av_add_rn(av_mul_rn(av_add_rn(av_mul_rn(x - 5.0, x), 8.0), x), -4.0), a);
    return 0.0;
}

// Filter scale: the kernel is stretched by in/out when downsampling (antialias), never shrunk.
AV_HD inline double av_pil_filter_scale(int64_t in, int64_t out) {
    double s = static_cast<double>(in) / static_cast<double>(out);
    return s < 1.0 ? 1.0 : s;
}

// Upper bound on the taps of one output (Pillow's ksize = ceil(support) * 2 + 1).
AV_HD inline int64_t av_pil_max_taps(int64_t in, int64_t out) {
    return static_cast<int64_t>(ceil(2.0 * av_pil_filter_scale(in, out))) * 2 + 1;
}

// Taps of output index i: input indices [*begin, *begin + n) with weights w[0..n), n returned
// (n <= av_pil_max_taps). Border taps that fall outside the image are dropped and the rest
// renormalised to sum 1 (not clamped, not replicated).
AV_HD inline int64_t av_pil_bicubic_taps(int64_t i, int64_t in, int64_t out, int64_t* begin, float* w) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    const double fs = av_pil_filter_scale(in, out);
    const double ss = 1.0 / fs;
    const double support = 2.0 * fs;  // exact: a power-of-two multiple
    const double center = av_mul_rn(static_cast<double>(i) + 0.5, scale);
    // C casts truncate toward zero, as in Pillow; negatives are clamped to 0 right after.
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in) xmax = in;
    const int64_t n = xmax - xmin;
    const int64_t kmax = av_pil_max_taps(in, out);
    // Two passes (sum, then normalised weights) so that no double buffer is needed.
    double ww = 0.0;
    for (int64_t x = 0; x < n && x < kmax; ++x)
        ww += av_pil_bicubic_filter(av_mul_rn(static_cast<double>(x + xmin) - center + 0.5, ss));
    for (int64_t x = 0; x < n && x < kmax; ++x) {
        double k = av_pil_bicubic_filter(av_mul_rn(static_cast<double>(x + xmin) - center + 0.5, ss));
        w[x] = static_cast<float>(ww != 0.0 ? k / ww : k);
    }
    *begin = xmin;
    return n < kmax ? n : kmax;
}
