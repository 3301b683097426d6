// CPU backend internals: one function per op family (files mirror cuda/), the thread pool and
// the SIMD level chosen at run time.
#pragma once

#include <cstdint>
#include <functional>

#include "../core/backend.h"

// Runs fn(begin, end) over [0, n) split into chunks of at least `grain` items on the shared
// pool (sized to the cores). The calling thread works too. Safe to call from several threads
// at once (calls are serialised); a nested call runs inline.
void av_cpu_parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
int av_cpu_num_threads();

enum av_cpu_simd { AV_SIMD_SCALAR = 0, AV_SIMD_AVX2 = 1, AV_SIMD_AVX512 = 2 };
av_cpu_simd av_cpu_simd_level();  // detected once; AV_SIMD env var ("scalar"|"avx2"|"avx512") caps it
const char* av_cpu_simd_name(av_cpu_simd s);

// Reads element i of a weight row as f32 whatever its dtype.
inline float av_cpu_load(const void* base, av_dtype t, int64_t i) {
    switch (t) {
        case AV_F32: return static_cast<const float*>(base)[i];
        case AV_F16: return av_f16_to_f32(static_cast<const uint16_t*>(base)[i]);
        case AV_BF16: return av_bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
        default: return 0.0f;
    }
}

av_status av_cpu_linear(const av_linear_params& p);          // gemm.cc
av_status av_cpu_conv2d(const av_conv2d_params& p);          // conv.cc
av_status av_cpu_layernorm(const av_layernorm_params& p);    // norm.cc
av_status av_cpu_groupnorm(const av_groupnorm_params& p);    // norm.cc
av_status av_cpu_modulate(const av_modulate_params& p);      // elementwise.cc
av_status av_cpu_binary(const av_binary_params& p);          // elementwise.cc
av_status av_cpu_unary(const av_unary_params& p);            // elementwise.cc
av_status av_cpu_softmax(const av_softmax_params& p);        // elementwise.cc
av_status av_cpu_copy(const av_copy_params& p);              // elementwise.cc
av_status av_cpu_qkv_prep(const av_qkv_prep_params& p);      // attn.cc
av_status av_cpu_attn(const av_attn_params& p);              // attn.cc
av_status av_cpu_resample(const av_resample_params& p);      // upsample.cc
av_status av_cpu_upsample_accum(const av_upsample_accum_params& p);  // upsample.cc
av_status av_cpu_vq_lookup(const av_vq_lookup_params& p);    // rvq.cc
av_status av_cpu_vq_nearest(const av_vq_nearest_params& p);  // rvq.cc
av_status av_cpu_sample(const av_sample_params& p);          // sample.cc
av_status av_cpu_diffusion_step(const av_diffusion_step_params& p);  // diffusion.cc
