// One scale of the inference loop (spec 5.1-5.4, 11.3): the scale's input tokens, the blocks
// over the KV cache, the head, CFG mixing + sampling, the VQ lookup and the f_hat update with
// the next scale's input. Reference: training/avtrain/model.py AlignVAR.generate (loop body),
// training/avtrain/vqvae.py VectorQuantizer.accumulate, training/avtrain/sampling.py.
#include <algorithm>

#include "engine.h"
#include "nn.h"

av_status av_engine::step(int64_t si, std::vector<int32_t>* idx_out) {
    const av_model_config& c = cfg_;
    AV_CHECK(next_si_ >= 0, "step: no batch was prepared");
    AV_CHECK(si == next_si_ && si < c.K, "step: expected scale " + std::to_string(next_si_) + ", got " +
                                             std::to_string(si));
    const int64_t B = B_, R = R_, C = c.width, H = c.heads, D = c.head_dim, T = c.seq_len, V = c.vocab;
    const int64_t Cv = c.cvae, G = c.grid, pn = c.patch_nums[si];
    const int64_t L = c.seq_end[si] - c.seq_begin[si];  // queries per row: prefix_len at si = 0, pn^2 after
    const bool cfg_on = R == 2 * B;

    // Scale input (si >= 1): x = word_embed(area_down(f_hat, pn)) * (1 + gamma_si m_si) + lvl_embed[si],
    // the same map for both CFG halves. The area-downsampled f_hat was written by the last step.
    if (si > 0) {
        const av_tensor e = av_view(h_.data(), {B * L, C});
        AV_TRY(av_linear_rows(*be_, av_view(next_.data(), {B * L, Cv}), word_w_, word_b_, e, AV_ACT_NONE, av_tensor(),
                              av_tensor(), B, L, B * L));  // [B*L, C]
        if (c.sca)
            AV_TRY(av_binary(*be_, e, av_view(av_at(masks_.data(), mask_off_[si]), {B * L, 1}), e, AV_BIN_MUL,
                             /*alpha=*/sca_.gamma[si], /*beta=*/1.0f));
        AV_TRY(av_binary(*be_, e, av_view(av_at(lvl_embed_, si * C), {1, C}), e, AV_BIN_ADD));
        AV_TRY(be_->copy(x_.data(), e.data, static_cast<size_t>(B * L * C) * sizeof(float)));
        if (cfg_on) AV_TRY(be_->copy(av_at(x_.data(), B * L * C), e.data, static_cast<size_t>(B * L * C) * sizeof(float)));
    }

    // Blocks over the cache: this step writes positions [seq_begin, seq_end).
    av_block_io io;
    io.x = av_view(x_.data(), {R * L, C});
    io.R = R;
    io.L = L;
    io.rows_per_label = B * L;
    io.n_label = n_label_;
    io.h = av_view(h_.data(), {R * L, C});
    io.qkv = av_view(qkv_.data(), {R * L, 3 * C});
    io.q = av_view(q_.data(), {R, H, L, D});
    io.o = av_view(o_.data(), {R * L, C});
    io.ff = av_view(ff_.data(), {R * L, c.mlp_hidden});
    io.kv_pos = c.seq_begin[si];
    io.n_kv = c.seq_end[si];
    io.rope = av_view(av_at(rope_.data(), 2 * c.seq_begin[si]), {L, 2});
    io.rope_base = c.rope_base;
    if (c.sca) io.key_bias = av_view(key_bias_.data(), {B, T});
    for (int64_t i = 0; i < c.depth; ++i) {
        io.k_cache = av_view(kv_k_[i].data(), {R, H, T, D}, c.kv_dtype);
        io.v_cache = av_view(kv_v_[i].data(), {R, H, T, D}, c.kv_dtype);
        AV_TRY(av_block_forward(*be_, blocks_[i], io, C, H));
    }

    // Head: at si = 0 only the class-token row predicts (the reference's x[:, -1:]).
    const int64_t Lh = si == 0 ? 1 : L;
    const av_tensor logits = av_view(logits_.data(), {R * Lh, V});
    if (si == 0) {
        av_tensor cls = av_tensor_make(av_at(x_.data(), (L - 1) * C), AV_F32, C, R, 1, 1);  // rows r*L + L-1
        cls.nb[1] = static_cast<int64_t>(sizeof(float)) * L * C;
        cls.nb[2] = cls.nb[3] = cls.nb[1] * R;
        AV_TRY(av_copy(*be_, cls, av_view(o_.data(), {R, C})));
        AV_TRY(av_head_forward(*be_, head_, av_view(o_.data(), {R, C}), av_view(h_.data(), {R, C}), logits, R, 1, B,
                               n_label_, C));
    } else {
        AV_TRY(av_head_forward(*be_, head_, io.x, io.h, logits, R, L, B * L, n_label_, C));
    }

    // G = (1 + t) Z_cond - t Z_neg with t = cfg * si / (K - 1); top-k / top-p / Philox sampling.
    av_sample_params sp;
    sp.logits = av_view(logits_.data(), {R, Lh, V});
    sp.image_key = av_view(keys_.data(), {B}, AV_I32);
    sp.idx = av_view(idx_.data(), {B, Lh}, AV_I32);
    sp.cfg = cfg_on ? 1 : 0;
    sp.t = static_cast<float>(run_.cfg * static_cast<double>(si) / static_cast<double>(c.K - 1));
    sp.top_k = run_.top_k;
    sp.top_p = run_.top_p;
    sp.seed = run_.seed;
    sp.scale = static_cast<int32_t>(si);
    AV_TRY(av_compute(*be_, AV_OP_SAMPLE, sp));

    if (c.token_mean) {
        // token_mode "mean": h = softmax(G) E, G = (1 + t) Z_cond - t Z_neg in fp32 (in place over
        // the conditional rows, after the sampler read them), as a [B, Cv, pn, pn] map.
        const av_tensor zc = av_view(logits_.data(), {B * Lh, V});
        if (cfg_on) {
            const av_tensor zero = av_view(consts_.data(), {1, 1});
            AV_TRY(av_binary(*be_, zc, zero, zc, AV_BIN_MUL, /*alpha=*/0.0f, /*beta=*/1.0f + sp.t));
            AV_TRY(av_binary(*be_, zc, av_view(av_at(logits_.data(), B * Lh * V), {B * Lh, V}), zc, AV_BIN_ADD, -sp.t));
        }
        av_softmax_params smp;
        smp.x = zc;
        smp.y = zc;
        AV_TRY(av_compute(*be_, AV_OP_SOFTMAX, smp));
        const av_tensor ht = av_view(o_.data(), {B * Lh, Cv});  // token-major [B, pn^2, Cv]
        AV_TRY(av_linear_rows(*be_, zc, codebook_t_, av_tensor(), ht, AV_ACT_NONE, av_tensor(), av_tensor(), B, Lh,
                              B * Lh));
        AV_TRY(av_copy(*be_, av_transposed_cs(o_.data(), B, Lh, Cv, Lh * Cv), av_view(codes_.data(), {B, Cv, Lh})));
    } else {
        // h = E[idx] as a [B, Cv, pn, pn] map.
        av_vq_lookup_params lp;
        lp.idx = av_view(idx_.data(), {B, pn * pn}, AV_I32);
        lp.codebook = codebook_;
        lp.y = av_view(codes_.data(), {B, Cv, pn * pn});
        lp.channel_major = 1;
        AV_TRY(av_compute(*be_, AV_OP_VQ_LOOKUP, lp));
    }
    // f_hat += Phi(bicubic_up(h)) (raw h at the last scale); next = area_down(f_hat, pn_next)
    // token-major for the next step's input.
    av_upsample_accum_params up;
    up.h = av_view(codes_.data(), {B, Cv, pn, pn});
    up.f_hat = av_view(f_hat_.data(), {B, Cv, G, G});
    up.phi_ratio = c.quant_resi;
    if (si + 1 < c.K) {
        const int64_t j = c.phi_index[si];
        const int64_t pn_next = c.patch_nums[si + 1];
        up.phi_w = phi_w_[j];
        up.phi_b = phi_b_[j];
        up.next = av_view(next_.data(), {B, pn_next * pn_next, Cv});
        up.pn_next = static_cast<int32_t>(pn_next);
    }
    AV_TRY(av_compute(*be_, AV_OP_UPSAMPLE_ACCUM, up));

    idx_out->resize(static_cast<size_t>(B * pn * pn));
    AV_TRY(be_->synchronize());
    AV_TRY(be_->download(idx_out->data(), idx_.data(), idx_out->size() * sizeof(int32_t)));
    last_l_ = L;
    last_lh_ = Lh;
    next_si_ = si + 1;
    return av_status::success();
}
