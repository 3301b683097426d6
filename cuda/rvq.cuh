// Codebook ops (rvq.cu): gather (vq_lookup) and nearest code by squared L2 (vq_nearest).
#pragma once

#include "common.cuh"

av_status av_cuda_vq_lookup(const av_vq_lookup_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_vq_nearest(const av_vq_nearest_params& p, const av_cuda_ctx& ctx);
