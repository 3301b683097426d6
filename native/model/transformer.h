// The AdaLN self-attention blocks and the AdaLN head of the VARSR transformer (spec 4.4-4.7,
// 11.4), written only against core/ops.h. Reference: VAR var/models/basic_var.py
// (AdaLNSelfAttn, SelfAttention, FFN, AdaLNBeforeHead), VARSR models/var.py, and
// training/avtrain (the project's PyTorch reference).
//
// Rows: the residual stream holds R rows of L tokens, [R, L, C]. Under CFG R = 2B: rows
// [0, B) are the conditional half (label 0), rows [B, 2B) the negative half (label
// num_classes-1). AdaLN modulation depends only on the label, so it is precomputed once at
// load (av_block_w::mod) as one row per half and broadcast with rows_per_group = B*L.
#pragma once

#include "core/backend.h"
#include "weights.h"

struct av_block_w {
    av_tensor qkv_w;    // [3C, C] mat_qkv (stored dtype)
    av_tensor qkv_b;    // [3C] f32: concat(q_bias, 0, v_bias)
    av_tensor q_scale;  // [H] f32: exp(min(scale_mul_1H11, ln 100))
    av_tensor kb_beta;  // [H] f32: softplus(mask_lambda); absent without SCA
    av_tensor proj_w, proj_b;
    av_tensor fc1_w, fc1_b;
    av_tensor fc2_w, fc2_b;
    av_tensor mod;      // [6, NL, C] f32: gamma1, gamma2, scale1, scale2, shift1, shift2 per label row
};

struct av_head_w {
    av_tensor mod;  // [2, NL, C] f32: scale, shift per label row
    av_tensor w;    // [V, C]
    av_tensor b;    // [V] f32
};

// Everything one block call reads and writes besides its weights.
struct av_block_io {
    av_tensor x;      // [R*L, C] residual stream (updated in place)
    int64_t R = 0, L = 0;
    int64_t rows_per_label = 0;  // B*L: rows of one CFG half
    int64_t n_label = 0;         // NL: label rows in `mod`
    av_tensor h;      // [R*L, C] scratch
    av_tensor qkv;    // [R*L, 3C] scratch
    av_tensor q;      // [R, H, L, D] scratch
    av_tensor o;      // [R*L, C] scratch
    av_tensor ff;     // [R*L, F] scratch
    av_tensor k_cache, v_cache;  // [R, H, n_ctx, D] this layer's cache
    int64_t kv_pos = 0;          // first cache position written by this step
    int64_t n_kv = 0;            // cache length attended after this step (kv_pos + L)
    av_tensor rope;   // [L, 2] f32
    float rope_base = 10000.0f;
    av_tensor key_bias;  // [B, n_ctx] f32, absent without SCA
};

// Row counts at or below which linears run one call per image row (M = L) so that every row's
// result is independent of the batch size: small-M GEMM paths (GEMV-like dot products) sum K
// in a different order than the tiled path, and a backend picks the path by M. Above it every
// batch size takes the tiled path, whose per-element reduction order does not depend on M.
constexpr int64_t AV_ROW_SPLIT_MAX_L = 64;

// y = res + gate(label of row) * act(x W^T + bias) over R rows of L tokens, x [R*L, K] ->
// y [R*L, N]; gate [NL, N] with rows [0, rows_per_label) on label row 0 and the next
// rows_per_label rows on label row 1 (gate and res optional).
av_status av_linear_rows(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& bias,
                         const av_tensor& y, int32_t act, const av_tensor& gate, const av_tensor& res, int64_t R,
                         int64_t L, int64_t rows_per_label);

// One AdaLN self-attention block: x += gamma1 * Attn(LN(x)(1+scale1)+shift1), then
// x += gamma2 * FFN(LN(x)(1+scale2)+shift2); appends this step's rotated k and v to the cache.
av_status av_block_forward(av_backend& be, const av_block_w& w, const av_block_io& io, int64_t C, int64_t H);

// logits [R*Lh, V] = head(LN(x)(1+scale)+shift) for x [R*Lh, C] (rows_per_label = B*Lh);
// h [R*Lh, C] scratch.
av_status av_head_forward(av_backend& be, const av_head_w& w, const av_tensor& x, const av_tensor& h,
                          const av_tensor& logits, int64_t R, int64_t Lh, int64_t rows_per_label, int64_t n_label,
                          int64_t C);
