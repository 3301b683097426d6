// Linear layer (gemm.cu): y = res + gate * act(x W^T + bias).
#pragma once

#include "common.cuh"

av_status av_cuda_linear(const av_linear_params& p, const av_cuda_ctx& ctx);
