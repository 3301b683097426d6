// Elementwise ops (elementwise.cu): modulate, binary, unary, softmax, strided copy.
#pragma once

#include "common.cuh"

av_status av_cuda_modulate(const av_modulate_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_binary(const av_binary_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_unary(const av_unary_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_softmax(const av_softmax_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_copy(const av_copy_params& p, const av_cuda_ctx& ctx);
