// The diffusion refiner's sampler step (ops.h av_diffusion_step_params, spec 6.2) on the host:
// one pass over the rows, the element arithmetic of core/diffusion-step.h. Its cost is a few
// flops and one Philox draw per element, next to the network's ~70 MFLOP per row, so it runs on
// the calling thread.
#include "../core/diffusion-step.h"
#include "../core/ops-check.h"
#include "backend-cpu.h"

av_status av_cpu_diffusion_step(const av_diffusion_step_params& p) {
    AV_TRY(av_check_diffusion_step(p));
    const int64_t Cv = p.x.ne[0], N = p.x.ne[1], L = p.tokens;
    float* x = static_cast<float*>(p.x.data);
    const int32_t* keys = static_cast<const int32_t*>(p.image_key.data);
    const float* o = static_cast<const float*>(p.o.data);
    float* eps_out = static_cast<float*>(p.eps_out.data);
    const av_diffusion_consts k{p.w, p.c_x, p.c_eps, p.coef1, p.coef2, p.log_beta, p.post_log_var, p.halves, p.noise};
    const uint32_t stream = static_cast<uint32_t>(p.stream);
    for (int64_t r = 0; r < N; ++r) {
        const uint32_t key = static_cast<uint32_t>(keys[r / L]), tok = static_cast<uint32_t>(r % L);
        float* xr = x + r * Cv;
        for (int64_t q = 0; q < Cv / 2; ++q) {
            float n[2] = {0.0f, 0.0f};
            if (p.init || p.noise) av_refiner_normal_pair(p.seed, key, stream, tok, static_cast<uint32_t>(q), &n[0], &n[1]);
            for (int j = 0; j < 2; ++j) {
                const int64_t c = 2 * q + j;
                if (p.init) {
                    xr[c] = n[j];
                    continue;
                }
                const float* oc = o + r * 2 * Cv;
                const float eps_n = p.halves == 2 ? o[(N + r) * 2 * Cv + c] : 0.0f;
                float e;
                xr[c] = av_diffusion_elem(k, xr[c], oc[c], eps_n, oc[Cv + c], n[j], &e);
                if (eps_out) eps_out[r * Cv + c] = e;
            }
        }
    }
    return av_status::success();
}
