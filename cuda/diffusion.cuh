// The diffusion refiner's sampler step (diffusion.cu): guidance on eps, the x0 clamp, the
// posterior mean and the learned-variance Philox draw, one thread per channel pair.
#pragma once

#include "common.cuh"

av_status av_cuda_diffusion_step(const av_diffusion_step_params& p, const av_cuda_ctx& ctx);
