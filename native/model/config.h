// Model hyper-parameters and the sequence schedule, as the TypeScript layer detected and
// validated them (src/model/config.ts, src/model/schedule.ts). Field names equal the JS keys
// of the session's config object. Native code only checks invariants (av_model_config_check).
// Reference: training/avtrain/config.py (ModelConfig), spec 1.1, 1.3, 8.4.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

struct av_model_config {
    int64_t depth = 0;
    int64_t width = 0;       // C
    int64_t heads = 0;       // H
    int64_t mlp_hidden = 0;  // FFN hidden width
    int64_t vocab = 0;       // V
    int64_t cvae = 0;        // Cv
    int64_t num_classes = 0;
    std::vector<int64_t> patch_nums;  // K entries
    std::vector<int64_t> cond_ch;     // conditioning net: conv_in width, then one per stride-2 stage
    int64_t vq_ch = 0;
    std::vector<int64_t> vq_ch_mult;
    int64_t vq_num_res = 0;  // decoder levels hold vq_num_res + 1 ResBlocks
    bool vq_attn_at_lowest = true;
    int64_t n_phi = 0;
    float quant_resi = 0.5f;
    float rope_base = 10000.0f;
    bool sca = false;
    // LR-conditioned decoder (metadata decoder_lr; training/avtrain/config.py ModelConfig.decoder_lr).
    bool decoder_lr = false;
    // Token mode "mean" (metadata token_mode; ModelConfig.token_mode): each scale's map is the
    // expected codebook vector softmax(G) E instead of E[idx].
    bool token_mean = false;
    // VARSR's diffusion refiner (spec 6.1): its width W and block count; 0 = not run (absent
    // from the file, an AlignVAR model, or turned off by the caller).
    int64_t refiner_width = 0;
    int64_t refiner_blocks = 0;
    // From the schedule: RoPE coordinates [seq_len, 2] and the Phi index per scale (-1 = none).
    std::vector<float> rope;
    std::vector<int32_t> phi_index;
    // Session setting, not read from the file: the KV cache dtype, AV_F32 (default) or AV_BF16
    // (half the memory; ops.h qkv_prep/attn round k and v to bf16 once, when they are written).
    av_dtype kv_dtype = AV_F32;

    // Derived sizes, filled by av_model_config_check.
    int64_t K = 0;           // scales
    int64_t grid = 0;        // G = patch_nums[K-1]
    int64_t prefix_len = 0;  // G*G + 1
    int64_t seq_len = 0;     // T
    int64_t hr_size = 0;     // HR side = 2^(levels-1) * G
    int64_t head_dim = 0;    // D = C / H
    std::vector<int64_t> token_offsets;  // o_si
    std::vector<int64_t> seq_begin;      // first sequence position fed at step si
    std::vector<int64_t> seq_end;        // KV length after step si
};

// Mask-generator sizes fixed by spec 11.2 / 11.7.
constexpr int64_t AV_SCA_EMBED = 8;
constexpr int64_t AV_SCA_HIDDEN = 32;
// GroupNorm groups of the VQVAE (spec 7).
constexpr int32_t AV_VQ_GROUPS = 32;

// Checks the invariants the forward relies on and fills the derived sizes.
av_status av_model_config_check(av_model_config* c);
