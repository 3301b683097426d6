// Resampling (upsample.cu): the four resample modes, and the fused residual accumulation of
// one scale (bicubic up + Phi conv + mix + accumulate + area-down of the next input).
#pragma once

#include "common.cuh"

av_status av_cuda_resample(const av_resample_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_upsample_accum(const av_upsample_accum_params& p, const av_cuda_ctx& ctx);
