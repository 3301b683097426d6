// Shape, dtype, contiguity, presence and aliasing checks of an op's params, shared by the CPU
// (native/cpu) and CUDA (cuda/) backends so both reject the same inputs with the same message.
// Plain host C++: the CUDA files call these host functions before their own backend-only
// limits. Each returns AV_ERR_INVALID with the op-prefixed message of the first failed check.
#pragma once

#include "ops.h"
#include "status.h"

av_status av_check_linear(const av_linear_params& p);
av_status av_check_conv2d(const av_conv2d_params& p);
av_status av_check_vq_lookup(const av_vq_lookup_params& p);
av_status av_check_vq_nearest(const av_vq_nearest_params& p);
av_status av_check_layernorm(const av_layernorm_params& p);
av_status av_check_groupnorm(const av_groupnorm_params& p);
av_status av_check_modulate(const av_modulate_params& p);
av_status av_check_binary(const av_binary_params& p);
av_status av_check_unary(const av_unary_params& p);
av_status av_check_softmax(const av_softmax_params& p);
av_status av_check_copy(const av_copy_params& p);
av_status av_check_qkv_prep(const av_qkv_prep_params& p);
av_status av_check_attn(const av_attn_params& p);
av_status av_check_resample(const av_resample_params& p);
av_status av_check_upsample_accum(const av_upsample_accum_params& p);
av_status av_check_sample(const av_sample_params& p);
av_status av_check_diffusion_step(const av_diffusion_step_params& p);
