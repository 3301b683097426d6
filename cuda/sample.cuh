// Token sampling (sample.cu): CFG mix, top-k, top-p and a Philox draw, one block per row.
#pragma once

#include "common.cuh"

av_status av_cuda_sample(const av_sample_params& p, const av_cuda_ctx& ctx);
