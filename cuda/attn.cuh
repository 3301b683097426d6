// Attention (attn.cu): qkv split + l2norm + RoPE + KV-cache write, and flash attention over
// the cache with a per-key bias and a block-causal level mask.
#pragma once

#include "common.cuh"

av_status av_cuda_qkv_prep(const av_qkv_prep_params& p, const av_cuda_ctx& ctx);
av_status av_cuda_attn(const av_attn_params& p, const av_cuda_ctx& ctx);
