// Helpers shared by the CPU op files whose row kernels are compiled once per ISA level with
// target attributes (norm.cc, elementwise.cc, attn.cc) and picked at run time by
// av_cpu_simd_level(), because the build compiles native/cpu for the baseline ISA only.
//
// Functions here are called from inside target-attributed functions, so (as gemm.h explains
// for the ISA files) they are `static` and always inline: no out-of-line copy compiled with
// AVX flags can exist for the linker to hand to a baseline caller. The FP options the inner
// loops rely on (-fno-trapping-math, so GCC may if-convert clamps and selects) come from
// CMakeLists.txt for all of av_core.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "backend-cpu.h"

#define AV_INLINE inline __attribute__((always_inline))

// Marks a loop whose iterations are independent: y may alias x exactly ("in place ok"), which
// the compiler cannot prove harmless by itself; partial overlap is rejected up front.
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
// level, dispatching on av_cpu_simd_level() (which honours the AV_SIMD cap). Use it inside an
// anonymous namespace so the clones stay local to their file.
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
static AV_INLINE float av_expf(float x) {
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
