// The diffusion refiner's sampler step of core/ops.h (av_diffusion_step_params, spec 6.2).
//
// Algorithm and grid mapping: one thread per (row, channel pair q), grid-stride over N * Cv/2.
// Each thread draws its two Gaussians with one Philox4x32-10 call (counter (image_key, stream,
// token, q)) and applies core/diffusion-step.h's element function to channels 2q and 2q + 1,
// the same expressions as the CPU backend. Memory bound and tiny (N * Cv = 65,536 elements per
// image at VARSR's sizes) next to the network's linears; float64 log/cos/sin in the draw match
// the reference's numpy Box-Muller.
//
// Reference: native/cpu/diffusion.cc (same semantics).
#include "core/diffusion-step.h"
#include "core/ops-check.h"
#include "diffusion.cuh"

namespace {

__global__ void diffusion_step_kernel(float* __restrict__ x, const float* __restrict__ o,
                                      const int32_t* __restrict__ keys, float* __restrict__ eps_out, int64_t N,
                                      int64_t Cv, int64_t L, int32_t init, uint32_t stream, uint64_t seed,
                                      av_diffusion_consts k) {
    const int64_t Q = Cv / 2, n = N * Q;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / Q, q = i % Q;
        float g[2] = {0.0f, 0.0f};
        if (init || k.noise)
            av_refiner_normal_pair(seed, static_cast<uint32_t>(keys[r / L]), stream, static_cast<uint32_t>(r % L),
                                   static_cast<uint32_t>(q), &g[0], &g[1]);
        for (int j = 0; j < 2; ++j) {
            const int64_t c = 2 * q + j;
            if (init) {
                x[r * Cv + c] = g[j];
                continue;
            }
            const float* oc = o + r * 2 * Cv;
            const float eps_n = k.halves == 2 ? o[(N + r) * 2 * Cv + c] : 0.0f;
            float e;
            x[r * Cv + c] = av_diffusion_elem(k, x[r * Cv + c], oc[c], eps_n, oc[Cv + c], g[j], &e);
            if (eps_out) eps_out[r * Cv + c] = e;
        }
    }
}

}  // namespace

av_status av_cuda_diffusion_step(const av_diffusion_step_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_diffusion_step(p));
    const int64_t Cv = p.x.ne[0], N = p.x.ne[1];
    if (N == 0) return av_status::success();
    const av_diffusion_consts k{p.w, p.c_x, p.c_eps, p.coef1, p.coef2, p.log_beta, p.post_log_var, p.halves, p.noise};
    const int threads = 256;
    const unsigned blocks = av_grid_1d(N * (Cv / 2), threads);
    diffusion_step_kernel<<<blocks, threads, 0, ctx.stream>>>(
        static_cast<float*>(p.x.data), static_cast<const float*>(p.o.data),
        static_cast<const int32_t*>(p.image_key.data), static_cast<float*>(p.eps_out.data), N, Cv, p.tokens, p.init,
        static_cast<uint32_t>(p.stream), p.seed, k);
    CUDA_CHECK_LAUNCH("diffusion_step");
    return av_status::success();
}
