// VARSR's diffusion refiner (spec 6): the per-token network SimpleMLPAdaLN and its respaced
// cosine schedule, run by av_engine::refine (refiner.cc) between the last scale and the decoder.
// Reference: training/avtrain/refiner.py (SimpleMLPAdaLN, refiner_schedule, refine).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

// Sinusoid size of the timestep embedding (spec 6.1).
constexpr int64_t AV_REFINER_FREQ = 256;
// Sampler constants (spec 6.2): 10 respaced steps of the 1000-step cosine schedule, the "vae
// scale" of the refined residual, and the Philox stream base (ops.h diffusion_step).
constexpr int AV_REFINER_STEPS = 10;
constexpr int AV_REFINER_BASE_STEPS = 1000;
constexpr float AV_REFINER_VAE_SCALE = 0.6f;
constexpr int32_t AV_REFINER_STREAM = 0x100;

struct av_refiner_w {
    int64_t width = 0;   // W
    int64_t blocks = 0;  // residual blocks
    av_tensor norm_w, norm_b;            // decoder_norm [C]
    av_tensor t0_w, t0_b, t2_w, t2_b;    // time_embed.mlp.0 [W, 256], .2 [W, W]
    av_tensor cond_w, cond_b;            // cond_embed [W, C]
    av_tensor in_w, in_b;                // input_proj [W, Cv]
    struct block {
        av_tensor ln_w, ln_b;            // in_ln [W]
        av_tensor m0_w, m0_b, m2_w, m2_b;  // mlp.0, mlp.2 [W, W]
        av_tensor ada_w, ada_b;          // adaLN_modulation.1 [3W, W]: shift, scale, gate
    };
    std::vector<block> res;
    av_tensor fin_ada_w, fin_ada_b;      // final_layer.adaLN_modulation.1 [2W, W]: shift, scale
    av_tensor fin_w, fin_b;              // final_layer.linear [2Cv, W]
};

// The respaced schedule in float64 (spec 6.2); index n = 0 .. AV_REFINER_STEPS - 1.
struct av_refiner_schedule {
    int64_t timestep[AV_REFINER_STEPS];  // S_n, the original timestep the network receives
    double beta[AV_REFINER_STEPS], abar[AV_REFINER_STEPS], abar_prev[AV_REFINER_STEPS];
    double post_log_var[AV_REFINER_STEPS], coef1[AV_REFINER_STEPS], coef2[AV_REFINER_STEPS];
};

av_refiner_schedule av_refiner_schedule_make();

// [cos(t f_i), sin(t f_i)], f_i = exp(-ln(10000) i / 128), in fp32 as the reference (256 values).
void av_refiner_timestep_embedding(int64_t t, float* out);
