// The per-element arithmetic of the diffusion refiner's sampler step (ops.h
// av_diffusion_step_params, spec 6.2), header-only so the CPU and CUDA backends run the same
// expressions in the same order: bit-identical results up to the platform's float64 libm
// (log, cos, sin in the Gaussian draw) and FMA contraction.
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"
#include "philox.h"

// Two N(0, 1) values (channels 2q and 2q + 1) from Philox4x32-10 keyed by `seed` at counter
// (image_key, stream, token, q): Box-Muller in float64 on u1 = ((x0 >> 8) + 1) 2^-24 in (0, 1]
// and u2 = (x1 >> 8) 2^-24, each rounded to f32 (training/avtrain/refiner.py refiner_noise).
AV_HD inline void av_refiner_normal_pair(uint64_t seed, uint32_t image_key, uint32_t stream, uint32_t token,
                                         uint32_t q, float* n0, float* n1) {
    av_philox4x32 ctr;
    ctr.v[0] = image_key;
    ctr.v[1] = stream;
    ctr.v[2] = token;
    ctr.v[3] = q;
    const av_philox4x32 o = av_philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const double u1 = (static_cast<double>(o.v[0] >> 8) + 1.0) * (1.0 / 16777216.0);
    const double u2 = static_cast<double>(o.v[1] >> 8) * (1.0 / 16777216.0);
    const double r = sqrt(-2.0 * log(u1));
    const double a = 2.0 * 3.14159265358979323846 * u2;
    *n0 = static_cast<float>(r * cos(a));
    *n1 = static_cast<float>(r * sin(a));
}

// Scalars of one sampler step, as the op receives them.
struct av_diffusion_consts {
    float w, c_x, c_eps, coef1, coef2, log_beta, post_log_var;
    int32_t halves, noise;
};

// One element: x (current sample), eps_c / eps_n (the two halves' eps; eps_n unused with one
// half), v (the conditional half's variance interpolation), n (its Gaussian draw). Returns the
// next x and stores the guided eps in *eps_out.
AV_HD inline float av_diffusion_elem(const av_diffusion_consts& k, float x, float eps_c, float eps_n, float v,
                                     float n, float* eps_out) {
    const float eps = k.halves == 2 ? (1.0f + k.w) * eps_c - k.w * eps_n : eps_c;
    *eps_out = eps;
    float x0 = k.c_x * x - k.c_eps * eps;
    x0 = x0 < -1.0f ? -1.0f : (x0 > 1.0f ? 1.0f : x0);
    const float mean = k.coef1 * x0 + k.coef2 * x;
    if (!k.noise) return mean;
    const float f = (v + 1.0f) / 2.0f;
    const float logvar = f * k.log_beta + (1.0f - f) * k.post_log_var;
    return mean + expf(0.5f * logvar) * n;
}
