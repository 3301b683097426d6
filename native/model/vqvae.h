// VQVAE decoder side (spec 7.1): post_quant_conv, conv_in, mid (ResBlock, AttnBlock,
// ResBlock), up levels from the lowest resolution (ResBlocks, AttnBlocks at the lowest level,
// Up2x = nearest x2 + conv), GN + SiLU, conv_out. Reference: training/avtrain/vqvae.py
// (Decoder, ResnetBlock, AttnBlock, Upsample2x; VQVAE.decode).
#pragma once

#include <vector>

#include "core/backend.h"

struct av_resblock_w {
    av_tensor norm1_w, norm1_b, conv1_w, conv1_b;
    av_tensor norm2_w, norm2_b, conv2_w, conv2_b;
    av_tensor nin_w, nin_b;  // absent when cin == cout
    int64_t cin = 0, cout = 0;
};

struct av_attnblock_w {
    av_tensor norm_w, norm_b;
    av_tensor q_w, q_b, k_w, k_b, v_w, v_b;  // row slices of qkv [3c, c, 1, 1] / [3c]
    av_tensor proj_w, proj_b;
    int64_t c = 0;
};

struct av_decoder_w {
    av_tensor post_quant_w, post_quant_b;
    av_tensor conv_in_w, conv_in_b;
    av_resblock_w mid1, mid2;
    av_attnblock_w mid_attn;
    struct level {
        std::vector<av_resblock_w> blocks;
        std::vector<av_attnblock_w> attns;  // empty or one per block
        av_tensor up_w, up_b;               // absent at level 0
        av_tensor lr_w, lr_b;               // decoder.lr_in.<l> [c, 3, 3, 3] / [c]: decoder_lr only
    };
    std::vector<level> levels;  // index = level l (run from the last to 0)
    av_tensor norm_out_w, norm_out_b, conv_out_w, conv_out_b;
    int64_t cvae = 0, grid = 0;
};

// Scratch a decode of `nb` images needs: three activation buffers and the attention buffers.
struct av_decoder_ws {
    void* act[3] = {nullptr, nullptr, nullptr};  // each av_decoder_act_floats
    void* attn = nullptr;                                  // av_decoder_attn_floats
    void* lr = nullptr;  // decoder_lr: the base area-downsampled to a level, nb * 3 * (S/2)^2 floats
};
int64_t av_decoder_act_floats(const av_decoder_w& w, int64_t nb);
int64_t av_decoder_attn_floats(const av_decoder_w& w, int64_t nb);

// f_hat [nb, Cv, G, G] -> out [nb, 3, S, S]: decoder(post_quant_conv(f_hat)), before the clamp.
// An LR-conditioned decoder (levels with lr_w; model metadata decoder_lr) also reads base
// [nb, 3, S, S] = 2 up01 - 1: at the start of level l, h += lr_in_l(area_down(base, r_l)).
av_status av_decoder_forward(av_backend& be, const av_decoder_w& w, const av_tensor& f_hat, int64_t nb,
                             const av_decoder_ws& ws, const av_tensor& out, const av_tensor& base = av_tensor());
