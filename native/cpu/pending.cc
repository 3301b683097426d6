// TEMPORARY during the first integration: weak fallbacks so the addon links while op files
// are written in parallel. Each op file's strong definition replaces these. Deleted before
// the foundation lands.
#include "backend-cpu.h"

#define AV_PENDING(fn, P) \
    __attribute__((weak)) av_status fn(const P&) { return av_status::error(AV_ERR_UNSUPPORTED, #fn " pending"); }

AV_PENDING(av_cpu_linear, av_linear_params)
AV_PENDING(av_cpu_conv2d, av_conv2d_params)
AV_PENDING(av_cpu_layernorm, av_layernorm_params)
AV_PENDING(av_cpu_groupnorm, av_groupnorm_params)
AV_PENDING(av_cpu_modulate, av_modulate_params)
AV_PENDING(av_cpu_binary, av_binary_params)
AV_PENDING(av_cpu_unary, av_unary_params)
AV_PENDING(av_cpu_softmax, av_softmax_params)
AV_PENDING(av_cpu_copy, av_copy_params)
AV_PENDING(av_cpu_qkv_prep, av_qkv_prep_params)
AV_PENDING(av_cpu_attn, av_attn_params)
AV_PENDING(av_cpu_resample, av_resample_params)
AV_PENDING(av_cpu_upsample_accum, av_upsample_accum_params)
AV_PENDING(av_cpu_vq_lookup, av_vq_lookup_params)
AV_PENDING(av_cpu_vq_nearest, av_vq_nearest_params)
AV_PENDING(av_cpu_sample, av_sample_params)
