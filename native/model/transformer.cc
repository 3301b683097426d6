// Reference: VAR var/models/basic_var.py (AdaLNSelfAttn.forward, SelfAttention.forward with
// attn_l2_norm, FFN, AdaLNBeforeHead) as used by VARSR, plus the SCA per-key bias (spec 11.4).
#include "transformer.h"

#include <algorithm>

#include "nn.h"

// Block j of a [6 or 2, NL, C] modulation tensor, as a [G, C] view of its first G label rows
// (G = 2 under CFG, 1 without: the row-group operands must have exactly ceil(M/rpg) rows).
static av_tensor av_mod_part(const av_tensor& mod, int64_t j, int64_t NL, int64_t G, int64_t C) {
    return av_view(av_at(mod, j * NL * C), {G, C});
}

av_status av_linear_rows(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& bias,
                         const av_tensor& y, int32_t act, const av_tensor& gate, const av_tensor& res, int64_t R,
                         int64_t L, int64_t rows_per_label) {
    if (L > AV_ROW_SPLIT_MAX_L) return av_linear(be, x, w, bias, y, act, gate, rows_per_label, res);
    const int64_t K = x.ne[0], N = y.ne[0];
    const int64_t NL = av_tensor_present(gate) ? gate.ne[1] : 1;
    for (int64_t r = 0; r < R; ++r) {
        const int64_t label = std::min((r * L) / rows_per_label, NL - 1);
        const av_tensor yr = av_view(av_at(y, r * L * N), {L, N});
        const av_tensor g = av_tensor_present(gate) ? av_view(av_at(gate, label * N), {1, N}) : av_tensor();
        const av_tensor rr = av_tensor_present(res) ? av_view(av_at(res, r * L * N), {L, N}) : av_tensor();
        AV_TRY(av_linear(be, av_view(av_at(x, r * L * K), {L, K}), w, bias, yr, act, g, L, rr));
    }
    return av_status::success();
}

av_status av_block_forward(av_backend& be, const av_block_w& w, const av_block_io& io, int64_t C, int64_t H) {
    const int64_t M = io.R * io.L;
    const int64_t D = C / H;
    const int64_t NL = io.n_label;
    const int64_t rpg = io.rows_per_label;
    const int64_t G = (M + rpg - 1) / rpg;  // label rows in use
    const av_tensor gamma1 = av_mod_part(w.mod, 0, NL, G, C), gamma2 = av_mod_part(w.mod, 1, NL, G, C);
    const av_tensor scale1 = av_mod_part(w.mod, 2, NL, G, C), scale2 = av_mod_part(w.mod, 3, NL, G, C);
    const av_tensor shift1 = av_mod_part(w.mod, 4, NL, G, C), shift2 = av_mod_part(w.mod, 5, NL, G, C);

    // h = LN(x) * (1 + scale1) + shift1                                    // [R*L, C]
    AV_TRY(av_layernorm(be, io.x, io.h, scale1, shift1, rpg));
    // qkv = h W_qkv^T + (q_bias, 0, v_bias)                                // [R, L, 3, H, D]
    AV_TRY(av_linear_rows(be, io.h, w.qkv_w, w.qkv_b, io.qkv, AV_ACT_NONE, av_tensor(), av_tensor(), io.R, io.L, rpg));
    // l2-norm q and k per head, q *= exp(min(rho, ln 100)), RoPE, append k/v to the cache.
    av_qkv_prep_params qp;
    qp.qkv = io.qkv;
    qp.q_scale = w.q_scale;
    qp.rope_pos = io.rope;
    qp.q_out = io.q;  // [R, H, L, D]
    qp.k_cache = io.k_cache;
    qp.v_cache = io.v_cache;
    qp.kv_pos = io.kv_pos;
    qp.l2norm = 1;
    qp.rope = 1;
    qp.rope_base = io.rope_base;
    AV_TRY(av_compute(be, AV_OP_QKV_PREP, qp));
    // o = softmax(q.k + beta_h * b_key) v over the cache, softmax scale 1 // [R, L, H, D]
    av_attn_params ap;
    ap.q = io.q;
    ap.k = io.k_cache;
    ap.v = io.v_cache;
    ap.key_bias = io.key_bias;
    ap.kb_beta = av_tensor_present(io.key_bias) ? w.kb_beta : av_tensor();
    ap.o = av_view(io.o.data, {io.R, io.L, H, D});
    ap.n_kv = io.n_kv;
    ap.scale = 1.0f;
    AV_TRY(av_compute(be, AV_OP_ATTN, ap));
    // x = x + gamma1 * proj(o)                                             // [R*L, C]
    AV_TRY(av_linear_rows(be, av_view(io.o.data, {M, C}), w.proj_w, w.proj_b, io.x, AV_ACT_NONE, gamma1, io.x, io.R,
                          io.L, rpg));
    // h = LN(x) * (1 + scale2) + shift2
    AV_TRY(av_layernorm(be, io.x, io.h, scale2, shift2, rpg));
    // x = x + gamma2 * fc2(GELU_tanh(fc1(h)))                              // ff [R*L, F]
    AV_TRY(av_linear_rows(be, io.h, w.fc1_w, w.fc1_b, io.ff, AV_ACT_GELU_TANH, av_tensor(), av_tensor(), io.R, io.L,
                          rpg));
    AV_TRY(av_linear_rows(be, io.ff, w.fc2_w, w.fc2_b, io.x, AV_ACT_NONE, gamma2, io.x, io.R, io.L, rpg));
    return av_status::success();
}

av_status av_head_forward(av_backend& be, const av_head_w& w, const av_tensor& x, const av_tensor& h,
                          const av_tensor& logits, int64_t R, int64_t Lh, int64_t rows_per_label, int64_t n_label,
                          int64_t C) {
    const int64_t G = (R * Lh + rows_per_label - 1) / rows_per_label;
    const av_tensor scale = av_mod_part(w.mod, 0, n_label, G, C), shift = av_mod_part(w.mod, 1, n_label, G, C);
    AV_TRY(av_layernorm(be, x, h, scale, shift, rows_per_label));  // [R*Lh, C]
    return av_linear_rows(be, h, w.w, w.b, logits, AV_ACT_NONE, av_tensor(), av_tensor(), R, Lh,
                          rows_per_label);  // [R*Lh, V]
}
