// LR conditioning network "con_embedding" (spec 3): conv_in, then per stage a stride-1 conv
// (c -> c) and a stride-2 conv (c -> c'), SiLU after every conv but the last, conv_out to the
// transformer width. Reference: training/avtrain/model.py ConEmbedding.
#pragma once

#include <vector>

#include "core/backend.h"

struct av_condnet_w {
    struct layer {
        av_tensor w, b;
        int32_t stride = 1;
        int32_t act = 0;
        int64_t cout = 0;
    };
    std::vector<layer> layers;  // conv_in, blocks.0 .. blocks.{2n-1}, conv_out
};

// Floats of the largest activation of the net for B images of side S (scratch sizing).
int64_t av_condnet_max_act(const av_condnet_w& w, int64_t B, int64_t S);

// x [B, 3, S, S] -> y [B, C, S/2^n, S/2^n]; a, b: scratch of av_condnet_max_act floats each.
av_status av_condnet_forward(av_backend& be, const av_condnet_w& w, const av_tensor& x, int64_t B, int64_t S, void* a,
                             void* b, const av_tensor& y);
