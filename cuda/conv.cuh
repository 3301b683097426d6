// 2-D convolution (conv.cu): implicit GEMM on the gemm-tile.cuh machinery.
#pragma once

#include "common.cuh"

av_status av_cuda_conv2d(const av_conv2d_params& p, const av_cuda_ctx& ctx);
