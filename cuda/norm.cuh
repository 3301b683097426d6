// Normalisations (norm.cu): LayerNorm with optional affine and AdaLN modulation; GroupNorm with
// optional fused SiLU.
#pragma once

#include "common.cuh"

av_status av_cuda_layernorm(const av_layernorm_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_groupnorm(const av_groupnorm_params& p, const av_cuda_ctx& ctx);
