// Loading, per-batch preparation and decoding of av_engine; the per-scale step is in step.cc.
// Reference: training/avtrain/model.py (AlignVAR.generate, lr_tokens, sca_state),
// training/avtrain/resample.py (preprocess_lr), training/avtrain/vqvae.py (VQVAE.decode).
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "nn.h"
#include "postprocess.h"

namespace {

bool av_ends_with(const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Weights kept in their stored dtype: matmul and conv weights (the `w` operands of ops.h).
// Embedding tables and the codebook are gathered from, not multiplied: they become f32.
bool av_is_matmul_weight(const std::string& name, size_t ndim) {
    if (ndim < 2) return false;
    if (name == "class_emb.weight" || name == "lvl_embed.weight" || name == "quantize.embedding.weight" ||
        name == "sca.level_embed.weight")
        return false;
    return av_ends_with(name, ".weight");
}

// Small tensors whose values the forward also needs on the host.
bool av_keep_host(const std::string& name) {
    return av_ends_with(name, ".attn.scale_mul_1H11") || av_ends_with(name, ".attn.mask_lambda") ||
           name == "sca.gamma" || name == "sca.level_embed.weight";
}

}  // namespace

av_engine::av_engine(std::unique_ptr<av_backend> be, av_model_config cfg)
    : be_(std::move(be)), cfg_(std::move(cfg)), w_(be_.get()) {}

av_engine::~av_engine() {
    // Members free their buffers through be_, which is declared first and so destroyed last;
    // pending work must finish before memory goes back to the backend.
    if (be_) be_->synchronize();
}

av_status av_engine::create(const std::string& backend, int device, av_model_config cfg,
                            std::unique_ptr<av_engine>* out) {
    AV_TRY(av_model_config_check(&cfg));
    std::unique_ptr<av_backend> be;
    AV_TRY(av_backend_create(backend, device, &be));
    // Ops whose operands are all f32; weight-dtype support is checked as weights arrive.
    for (av_op op : {AV_OP_LAYERNORM, AV_OP_GROUPNORM, AV_OP_BINARY, AV_OP_UNARY, AV_OP_SOFTMAX, AV_OP_QKV_PREP,
                     AV_OP_ATTN, AV_OP_RESAMPLE, AV_OP_VQ_LOOKUP, AV_OP_SAMPLE, AV_OP_COPY, AV_OP_LINEAR,
                     AV_OP_CONV2D, AV_OP_UPSAMPLE_ACCUM})
        if (!be->supports_op(op, AV_F32))
            return av_status::error(AV_ERR_UNSUPPORTED,
                                    std::string(be->name()) + ": op " + av_op_name(op) + " is not supported");
    if (cfg.refiner_width > 0 && !be->supports_op(AV_OP_DIFFUSION_STEP, AV_F32))
        return av_status::error(AV_ERR_UNSUPPORTED,
                                std::string(be->name()) + ": op diffusion_step (the refiner) is not supported");
    if (cfg.kv_dtype != AV_F32)
        for (av_op op : {AV_OP_QKV_PREP, AV_OP_ATTN})
            if (!be->supports_op(op, cfg.kv_dtype))
                return av_status::error(AV_ERR_UNSUPPORTED, std::string(be->name()) + ": op " + av_op_name(op) +
                                                                " does not support a " + av_dtype_name(cfg.kv_dtype) +
                                                                " KV cache");
    out->reset(new av_engine(std::move(be), std::move(cfg)));
    return av_status::success();
}

av_status av_engine::load_tensor(const std::string& name, const void* data, av_dtype dtype,
                                 const std::vector<int64_t>& shape) {
    AV_CHECK(!finalized_, "load_tensor: the model is already finalized");
    const bool keep_dtype = av_is_matmul_weight(name, shape.size());
    if (keep_dtype && dtype != AV_F32) {
        // Fail before uploading the rest of a large file: the op that will read this weight.
        std::vector<av_op> ops;
        if (shape.size() == 2) ops.push_back(AV_OP_LINEAR);
        else if (name.rfind("quantize.quant_resi.", 0) == 0) ops.push_back(AV_OP_UPSAMPLE_ACCUM);
        else ops.push_back(AV_OP_CONV2D);
        if (av_ends_with(name, ".qkv.weight")) ops.push_back(AV_OP_LINEAR);  // VQVAE attention q, k
        for (av_op op : ops)
            if (!be_->supports_op(op, dtype))
                return av_status::error(AV_ERR_UNSUPPORTED, std::string(be_->name()) + ": op " + av_op_name(op) +
                                                                " with " + av_dtype_name(dtype) + " weights (" +
                                                                name + ") is not supported");
    }
    return w_.add(name, data, dtype, shape, !keep_dtype, av_keep_host(name));
}

size_t av_engine::state_bytes() const {
    size_t s = 0;
    for (const auto& b : kv_k_) s += b.bytes();
    for (const auto& b : kv_v_) s += b.bytes();
    for (const av_buffer* b : {&x_, &h_, &qkv_, &q_, &o_, &ff_, &logits_, &idx_, &keys_, &f_hat_, &codes_, &next_,
                               &key_bias_, &masks_, &dec_attn_, &dec_out_, &dec_act_[0], &dec_act_[1], &dec_act_[2], &dec_base_, &dec_lr_})
        s += b->bytes();
    for (const av_buffer* b : {&ref_z_, &ref_c_, &ref_sy_, &ref_a_, &ref_h_, &ref_t_, &ref_shift_, &ref_scale_, &ref_gate_,
                               &ref_xin_, &ref_o_, &ref_x_, &ref_eps_, &ref_temb_})
        s += b->bytes();
    return s;
}

av_status av_engine::download_f32(const void* src, int64_t n, std::vector<float>* out) {
    out->resize(static_cast<size_t>(n));
    AV_TRY(be_->synchronize());
    return be_->download(out->data(), src, static_cast<size_t>(n) * sizeof(float));
}

// ---- finalize ---------------------------------------------------------------------------------

av_status av_engine::resolve_weights() {
    const av_model_config& c = cfg_;
    auto get = [&](const std::string& n, av_tensor* t) { return w_.get(n, t); };

    // Conditioning net.
    cond_.layers.clear();
    auto cond_layer = [&](const std::string& p, int32_t stride, int32_t act, int64_t cout) -> av_status {
        av_condnet_w::layer l;
        AV_TRY(get(p + ".weight", &l.w));
        AV_TRY(get(p + ".bias", &l.b));
        l.stride = stride;
        l.act = act;
        l.cout = cout;
        cond_.layers.push_back(l);
        return av_status::success();
    };
    AV_TRY(cond_layer("con_embedding.conv_in", 1, AV_ACT_SILU, c.cond_ch[0]));
    for (size_t s = 0; s + 1 < c.cond_ch.size(); ++s) {
        AV_TRY(cond_layer("con_embedding.blocks." + std::to_string(2 * s), 1, AV_ACT_SILU, c.cond_ch[s]));
        AV_TRY(cond_layer("con_embedding.blocks." + std::to_string(2 * s + 1), 2, AV_ACT_SILU, c.cond_ch[s + 1]));
    }
    AV_TRY(cond_layer("con_embedding.conv_out", 1, AV_ACT_NONE, c.width));

    AV_TRY(get("word_embed.weight", &word_w_));
    AV_TRY(get("word_embed.bias", &word_b_));
    AV_TRY(get("class_emb.weight", &class_emb_));
    AV_TRY(get("pos_start", &pos_start_));
    AV_TRY(get("lvl_embed.weight", &lvl_embed_));
    AV_TRY(get("quantize.embedding.weight", &codebook_));

    blocks_.assign(static_cast<size_t>(c.depth), av_block_w());
    for (int64_t i = 0; i < c.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        av_block_w& b = blocks_[i];
        AV_TRY(get(p + "attn.mat_qkv.weight", &b.qkv_w));
        AV_TRY(get(p + "attn.proj.weight", &b.proj_w));
        AV_TRY(get(p + "attn.proj.bias", &b.proj_b));
        AV_TRY(get(p + "ffn.fc1.weight", &b.fc1_w));
        AV_TRY(get(p + "ffn.fc1.bias", &b.fc1_b));
        AV_TRY(get(p + "ffn.fc2.weight", &b.fc2_w));
        AV_TRY(get(p + "ffn.fc2.bias", &b.fc2_b));
    }
    AV_TRY(get("head.weight", &head_.w));
    AV_TRY(get("head.bias", &head_.b));

    if (c.sca) {
        AV_TRY(get("sca.mask.0.weight", &sca_.mask0_w));
        AV_TRY(get("sca.mask.0.bias", &sca_.mask0_b));
        AV_TRY(get("sca.mask.2.weight", &sca_.mask2_w));
        AV_TRY(get("sca.mask.2.bias", &sca_.mask2_b));
        AV_TRY(get("sca.mask.4.weight", &sca_.mask4_w));
        AV_TRY(get("sca.mask.4.bias", &sca_.mask4_b));
        const std::vector<float>* le = w_.host("sca.level_embed.weight");
        const std::vector<float>* ga = w_.host("sca.gamma");
        AV_CHECK(le && ga, "sca.level_embed.weight and sca.gamma were not loaded");
        AV_CHECK(static_cast<int64_t>(le->size()) == c.K * AV_SCA_EMBED && static_cast<int64_t>(ga->size()) == c.K,
                 "sca: level_embed must be [K, 8] and gamma [K]");
        sca_.level_embed = *le;
        sca_.gamma = *ga;
    }

    phi_w_.assign(static_cast<size_t>(c.n_phi), av_tensor());
    phi_b_.assign(static_cast<size_t>(c.n_phi), av_tensor());
    for (int64_t j = 0; j < c.n_phi; ++j) {
        AV_TRY(get("quantize.quant_resi.qresi_ls." + std::to_string(j) + ".weight", &phi_w_[j]));
        AV_TRY(get("quantize.quant_resi.qresi_ls." + std::to_string(j) + ".bias", &phi_b_[j]));
    }

    // VQVAE decoder.
    dec_ = av_decoder_w();
    dec_.cvae = c.cvae;
    dec_.grid = c.grid;
    AV_TRY(get("post_quant_conv.weight", &dec_.post_quant_w));
    AV_TRY(get("post_quant_conv.bias", &dec_.post_quant_b));
    AV_TRY(get("decoder.conv_in.weight", &dec_.conv_in_w));
    AV_TRY(get("decoder.conv_in.bias", &dec_.conv_in_b));
    auto res = [&](const std::string& p, int64_t cin, int64_t cout, av_resblock_w* r) -> av_status {
        r->cin = cin;
        r->cout = cout;
        AV_TRY(get(p + ".norm1.weight", &r->norm1_w));
        AV_TRY(get(p + ".norm1.bias", &r->norm1_b));
        AV_TRY(get(p + ".conv1.weight", &r->conv1_w));
        AV_TRY(get(p + ".conv1.bias", &r->conv1_b));
        AV_TRY(get(p + ".norm2.weight", &r->norm2_w));
        AV_TRY(get(p + ".norm2.bias", &r->norm2_b));
        AV_TRY(get(p + ".conv2.weight", &r->conv2_w));
        AV_TRY(get(p + ".conv2.bias", &r->conv2_b));
        if (cin != cout) {
            AV_TRY(get(p + ".nin_shortcut.weight", &r->nin_w));
            AV_TRY(get(p + ".nin_shortcut.bias", &r->nin_b));
        }
        return av_status::success();
    };
    auto attn = [&](const std::string& p, int64_t ch, av_attnblock_w* a) -> av_status {
        a->c = ch;
        av_tensor qkv_w, qkv_b;
        AV_TRY(get(p + ".norm.weight", &a->norm_w));
        AV_TRY(get(p + ".norm.bias", &a->norm_b));
        AV_TRY(get(p + ".qkv.weight", &qkv_w));  // [3c, c, 1, 1]
        AV_TRY(get(p + ".qkv.bias", &qkv_b));    // [3c]
        AV_TRY(get(p + ".proj_out.weight", &a->proj_w));
        AV_TRY(get(p + ".proj_out.bias", &a->proj_b));
        // q and k run as linears over token-major activations ([c, c] weights), v as a 1x1 conv.
        a->q_w = av_reshape(qkv_w, {ch, ch});
        a->k_w = av_view(av_at(qkv_w, ch * ch), {ch, ch}, qkv_w.dtype);
        a->v_w = av_view(av_at(qkv_w, 2 * ch * ch), {ch, ch, 1, 1}, qkv_w.dtype);
        a->q_b = av_view(qkv_b.data, {ch});
        a->k_b = av_view(av_at(qkv_b, ch), {ch});
        a->v_b = av_view(av_at(qkv_b, 2 * ch), {ch});
        return av_status::success();
    };
    const int64_t levels = static_cast<int64_t>(c.vq_ch_mult.size());
    int64_t block_in = c.vq_ch * c.vq_ch_mult.back();
    AV_TRY(res("decoder.mid.block_1", block_in, block_in, &dec_.mid1));
    AV_TRY(attn("decoder.mid.attn_1", block_in, &dec_.mid_attn));
    AV_TRY(res("decoder.mid.block_2", block_in, block_in, &dec_.mid2));
    dec_.levels.assign(static_cast<size_t>(levels), av_decoder_w::level());
    for (int64_t l = levels - 1; l >= 0; --l) {
        auto& lv = dec_.levels[l];
        const int64_t block_out = c.vq_ch * c.vq_ch_mult[l];
        for (int64_t b = 0; b < c.vq_num_res + 1; ++b) {
            const std::string p = "decoder.up." + std::to_string(l);
            lv.blocks.emplace_back();
            AV_TRY(res(p + ".block." + std::to_string(b), block_in, block_out, &lv.blocks.back()));
            block_in = block_out;
            if (l == levels - 1 && c.vq_attn_at_lowest) {
                lv.attns.emplace_back();
                AV_TRY(attn(p + ".attn." + std::to_string(b), block_in, &lv.attns.back()));
            }
        }
        if (l != 0) {
            AV_TRY(get("decoder.up." + std::to_string(l) + ".upsample.conv.weight", &lv.up_w));
            AV_TRY(get("decoder.up." + std::to_string(l) + ".upsample.conv.bias", &lv.up_b));
        }
        if (c.decoder_lr) {
            AV_TRY(get("decoder.lr_in." + std::to_string(l) + ".weight", &lv.lr_w));
            AV_TRY(get("decoder.lr_in." + std::to_string(l) + ".bias", &lv.lr_b));
        }
    }
    AV_TRY(get("decoder.norm_out.weight", &dec_.norm_out_w));
    AV_TRY(get("decoder.norm_out.bias", &dec_.norm_out_b));
    AV_TRY(get("decoder.conv_out.weight", &dec_.conv_out_w));
    AV_TRY(get("decoder.conv_out.bias", &dec_.conv_out_b));
    return resolve_refiner();
}

av_status av_engine::resolve_refiner() {
    ref_ = av_refiner_w();
    if (cfg_.refiner_width == 0) return av_status::success();
    auto get = [&](const std::string& n, av_tensor* t) { return w_.get(n, t); };
    ref_.width = cfg_.refiner_width;
    ref_.blocks = cfg_.refiner_blocks;
    const std::string p = "diffloss.net.";
    AV_TRY(get("decoder_norm.weight", &ref_.norm_w));
    AV_TRY(get("decoder_norm.bias", &ref_.norm_b));
    AV_TRY(get(p + "time_embed.mlp.0.weight", &ref_.t0_w));
    AV_TRY(get(p + "time_embed.mlp.0.bias", &ref_.t0_b));
    AV_TRY(get(p + "time_embed.mlp.2.weight", &ref_.t2_w));
    AV_TRY(get(p + "time_embed.mlp.2.bias", &ref_.t2_b));
    AV_TRY(get(p + "cond_embed.weight", &ref_.cond_w));
    AV_TRY(get(p + "cond_embed.bias", &ref_.cond_b));
    AV_TRY(get(p + "input_proj.weight", &ref_.in_w));
    AV_TRY(get(p + "input_proj.bias", &ref_.in_b));
    ref_.res.assign(static_cast<size_t>(ref_.blocks), av_refiner_w::block());
    for (int64_t i = 0; i < ref_.blocks; ++i) {
        const std::string q = p + "res_blocks." + std::to_string(i) + ".";
        auto& b = ref_.res[i];
        AV_TRY(get(q + "in_ln.weight", &b.ln_w));
        AV_TRY(get(q + "in_ln.bias", &b.ln_b));
        AV_TRY(get(q + "mlp.0.weight", &b.m0_w));
        AV_TRY(get(q + "mlp.0.bias", &b.m0_b));
        AV_TRY(get(q + "mlp.2.weight", &b.m2_w));
        AV_TRY(get(q + "mlp.2.bias", &b.m2_b));
        AV_TRY(get(q + "adaLN_modulation.1.weight", &b.ada_w));
        AV_TRY(get(q + "adaLN_modulation.1.bias", &b.ada_b));
    }
    AV_TRY(get(p + "final_layer.adaLN_modulation.1.weight", &ref_.fin_ada_w));
    AV_TRY(get(p + "final_layer.adaLN_modulation.1.bias", &ref_.fin_ada_b));
    AV_TRY(get(p + "final_layer.linear.weight", &ref_.fin_w));
    AV_TRY(get(p + "final_layer.linear.bias", &ref_.fin_b));
    const int64_t W = ref_.width, C = cfg_.width, Cv = cfg_.cvae;
    auto shape_is = [](const av_tensor& t, int64_t rows, int64_t cols) { return t.ne[0] == cols && t.ne[1] == rows; };
    AV_CHECK(shape_is(ref_.t0_w, W, AV_REFINER_FREQ) && shape_is(ref_.t2_w, W, W) && shape_is(ref_.cond_w, W, C) &&
                 shape_is(ref_.in_w, W, Cv) && shape_is(ref_.fin_ada_w, 2 * W, W) && shape_is(ref_.fin_w, 2 * Cv, W),
             "refiner: diffloss.net weights do not match width " + std::to_string(W) + " (C " + std::to_string(C) +
                 ", Cv " + std::to_string(Cv) + ")");
    for (const auto& b : ref_.res)
        AV_CHECK(shape_is(b.m0_w, W, W) && shape_is(b.m2_w, W, W) && shape_is(b.ada_w, 3 * W, W),
                 "refiner: a residual block's weights do not match width " + std::to_string(W));
    return av_status::success();
}

// Per block: qkv bias (q_bias, 0, v_bias), q temperature exp(min(rho, ln 100)), SCA beta
// softplus(mask_lambda); AdaLN modulation ada_lin(SiLU(class_emb[label])) for the two labels
// the sampler uses (0 and num_classes - 1), permuted to [6, NL, C] so each of gamma1 .. shift2
// is a contiguous [NL, C] row-group operand. The ada_lin weights are released afterwards.
av_status av_engine::compute_modulation() {
    const int64_t C = cfg_.width, H = cfg_.heads, NL = n_label_;
    // cond = SiLU(class_emb[[0, num_classes-1]])                              // [NL, C]
    av_buffer cond_buf, ada_buf;
    AV_TRY(cond_buf.alloc(be_.get(), static_cast<size_t>(NL * C) * sizeof(float)));
    AV_TRY(ada_buf.alloc(be_.get(), static_cast<size_t>(NL * 6 * C) * sizeof(float)));
    const int64_t labels[2] = {0, cfg_.num_classes - 1};
    for (int64_t l = 0; l < NL; ++l)
        AV_TRY(be_->copy(av_at(cond_buf.data(), l * C), av_at(class_emb_, labels[l] * C), C * sizeof(float)));
    const av_tensor cond = av_view(cond_buf.data(), {NL, C});
    AV_TRY(av_unary(*be_, cond, cond, AV_ACT_SILU));

    // Permutes ada [NL, J, C] into dst [J, NL, C].
    auto permute = [&](int64_t J, void* dst) -> av_status {
        av_tensor src = av_tensor_make(ada_buf.data(), AV_F32, C, NL, J, 1);
        src.nb[1] = static_cast<int64_t>(sizeof(float)) * J * C;
        src.nb[2] = static_cast<int64_t>(sizeof(float)) * C;
        src.nb[3] = src.nb[2] * J;
        return av_copy(*be_, src, av_view(dst, {J, NL, C}));
    };

    for (int64_t i = 0; i < cfg_.depth; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        av_block_w& b = blocks_[i];
        // qkv bias = concat(q_bias, zero_k_bias, v_bias)                        // [3C]
        av_tensor qb, vb;
        AV_TRY(w_.get(p + "attn.q_bias", &qb));
        AV_TRY(w_.get(p + "attn.v_bias", &vb));
        av_buffer bias;
        AV_TRY(bias.alloc(be_.get(), static_cast<size_t>(3 * C) * sizeof(float)));
        AV_TRY(be_->copy(bias.data(), qb.data, C * sizeof(float)));
        AV_TRY(be_->memset_zero(av_at(bias.data(), C), C * sizeof(float)));
        AV_TRY(be_->copy(av_at(bias.data(), 2 * C), vb.data, C * sizeof(float)));
        b.qkv_b = av_view(bias.data(), {3 * C});
        w_.put(p + "attn.qkv_bias", b.qkv_b, std::move(bias));
        w_.erase(p + "attn.q_bias");
        w_.erase(p + "attn.v_bias");

        // Per-head scalars, computed in float64 and rounded once.
        const std::vector<float>* rho = w_.host(p + "attn.scale_mul_1H11");
        AV_CHECK(rho && static_cast<int64_t>(rho->size()) == H, p + "attn.scale_mul_1H11 must hold H values");
        std::vector<float> hv(static_cast<size_t>(H));
        const float max_mul = static_cast<float>(std::log(100.0));
        for (int64_t h = 0; h < H; ++h) hv[h] = static_cast<float>(std::exp(static_cast<double>(std::min((*rho)[h], max_mul))));
        av_buffer qs;
        AV_TRY(qs.alloc(be_.get(), static_cast<size_t>(H) * sizeof(float)));
        AV_TRY(be_->upload(qs.data(), hv.data(), static_cast<size_t>(H) * sizeof(float)));
        b.q_scale = av_view(qs.data(), {H});
        w_.put(p + "attn.q_scale", b.q_scale, std::move(qs));
        if (cfg_.sca) {
            const std::vector<float>* lam = w_.host(p + "attn.mask_lambda");
            AV_CHECK(lam && static_cast<int64_t>(lam->size()) == H, p + "attn.mask_lambda must hold H values");
            for (int64_t h = 0; h < H; ++h) {
                const double x = (*lam)[h];
                hv[h] = static_cast<float>(x > 20.0 ? x : std::log1p(std::exp(x)));  // F.softplus, threshold 20
            }
            av_buffer kb;
            AV_TRY(kb.alloc(be_.get(), static_cast<size_t>(H) * sizeof(float)));
            AV_TRY(be_->upload(kb.data(), hv.data(), static_cast<size_t>(H) * sizeof(float)));
            b.kb_beta = av_view(kb.data(), {H});
            w_.put(p + "attn.kb_beta", b.kb_beta, std::move(kb));
        }

        // ada = ada_lin(SiLU(cond)) -> [6, NL, C]
        av_tensor aw, ab;
        AV_TRY(w_.get(p + "ada_lin.1.weight", &aw));
        AV_TRY(w_.get(p + "ada_lin.1.bias", &ab));
        AV_TRY(av_linear(*be_, cond, aw, ab, av_view(ada_buf.data(), {NL, 6 * C})));
        av_buffer mod;
        AV_TRY(mod.alloc(be_.get(), static_cast<size_t>(6 * NL * C) * sizeof(float)));
        AV_TRY(permute(6, mod.data()));
        b.mod = av_view(mod.data(), {6, NL, C});
        w_.put(p + "ada_mod", b.mod, std::move(mod));
        AV_TRY(be_->synchronize());
        w_.erase(p + "ada_lin.1.weight");
        w_.erase(p + "ada_lin.1.bias");
    }
    av_tensor aw, ab;
    AV_TRY(w_.get("head_nm.ada_lin.1.weight", &aw));
    AV_TRY(w_.get("head_nm.ada_lin.1.bias", &ab));
    AV_TRY(av_linear(*be_, cond, aw, ab, av_view(ada_buf.data(), {NL, 2 * C})));
    av_buffer mod;
    AV_TRY(mod.alloc(be_.get(), static_cast<size_t>(2 * NL * C) * sizeof(float)));
    AV_TRY(permute(2, mod.data()));
    head_.mod = av_view(mod.data(), {2, NL, C});
    w_.put("head_nm.ada_mod", head_.mod, std::move(mod));
    AV_TRY(be_->synchronize());
    w_.erase("head_nm.ada_lin.1.weight");
    w_.erase("head_nm.ada_lin.1.bias");
    return av_status::success();
}

av_status av_engine::check_support() {
    std::set<std::pair<int, int>> need;
    auto add = [&](av_op op, const av_tensor& w) { need.insert({op, w.dtype}); };
    for (av_op op : {AV_OP_LAYERNORM, AV_OP_GROUPNORM, AV_OP_BINARY, AV_OP_UNARY, AV_OP_SOFTMAX, AV_OP_QKV_PREP,
                     AV_OP_ATTN, AV_OP_RESAMPLE, AV_OP_VQ_LOOKUP, AV_OP_SAMPLE, AV_OP_COPY, AV_OP_LINEAR})
        need.insert({op, AV_F32});
    for (const auto& l : cond_.layers) add(AV_OP_CONV2D, l.w);
    add(AV_OP_LINEAR, word_w_);
    for (const auto& b : blocks_)
        for (const av_tensor* t : {&b.qkv_w, &b.proj_w, &b.fc1_w, &b.fc2_w}) add(AV_OP_LINEAR, *t);
    add(AV_OP_LINEAR, head_.w);
    if (cfg_.sca)
        for (const av_tensor* t : {&sca_.mask0_w, &sca_.mask2_w, &sca_.mask4_w}) add(AV_OP_CONV2D, *t);
    for (const auto& t : phi_w_) add(AV_OP_UPSAMPLE_ACCUM, t);
    need.insert({AV_OP_UPSAMPLE_ACCUM, AV_F32});
    add(AV_OP_CONV2D, dec_.post_quant_w);
    add(AV_OP_CONV2D, dec_.conv_in_w);
    add(AV_OP_CONV2D, dec_.conv_out_w);
    auto res = [&](const av_resblock_w& r) {
        add(AV_OP_CONV2D, r.conv1_w);
        add(AV_OP_CONV2D, r.conv2_w);
        if (av_tensor_present(r.nin_w)) add(AV_OP_CONV2D, r.nin_w);
    };
    auto attn = [&](const av_attnblock_w& a) {
        add(AV_OP_LINEAR, a.q_w);
        add(AV_OP_CONV2D, a.v_w);
        add(AV_OP_CONV2D, a.proj_w);
    };
    res(dec_.mid1);
    res(dec_.mid2);
    attn(dec_.mid_attn);
    for (const auto& lv : dec_.levels) {
        for (const auto& r : lv.blocks) res(r);
        for (const auto& a : lv.attns) attn(a);
        if (av_tensor_present(lv.up_w)) add(AV_OP_CONV2D, lv.up_w);
        if (av_tensor_present(lv.lr_w)) add(AV_OP_CONV2D, lv.lr_w);
    }
    if (ref_.width > 0) {
        need.insert({AV_OP_DIFFUSION_STEP, AV_F32});
        for (const av_tensor* t : {&ref_.t0_w, &ref_.t2_w, &ref_.cond_w, &ref_.in_w, &ref_.fin_ada_w, &ref_.fin_w})
            add(AV_OP_LINEAR, *t);
        for (const auto& b : ref_.res)
            for (const av_tensor* t : {&b.m0_w, &b.m2_w, &b.ada_w}) add(AV_OP_LINEAR, *t);
    }
    for (const auto& n : need)
        if (!be_->supports_op(static_cast<av_op>(n.first), static_cast<av_dtype>(n.second)))
            return av_status::error(AV_ERR_UNSUPPORTED, std::string(be_->name()) + ": op " +
                                                            av_op_name(static_cast<av_op>(n.first)) + " with " +
                                                            av_dtype_name(static_cast<av_dtype>(n.second)) +
                                                            " weights is not supported");
    return av_status::success();
}

av_status av_engine::finalize() {
    AV_CHECK(!finalized_, "finalize: already finalized");
    AV_TRY(resolve_weights());
    AV_TRY(check_support());
    AV_TRY(compute_modulation());
    AV_TRY(rope_.alloc(be_.get(), cfg_.rope.size() * sizeof(float)));
    AV_TRY(be_->upload(rope_.data(), cfg_.rope.data(), cfg_.rope.size() * sizeof(float)));
    if (cfg_.token_mean) {  // E^T [Cv, V] for h = softmax(G) E as a linear
        const int64_t V = cfg_.vocab, Cv = cfg_.cvae;
        AV_TRY(codebook_t_buf_.alloc(be_.get(), static_cast<size_t>(V * Cv) * sizeof(float)));
        codebook_t_ = av_view(codebook_t_buf_.data(), {Cv, V});
        AV_TRY(av_copy(*be_, av_transposed_cs(codebook_.data, 1, V, Cv, V * Cv), codebook_t_));
    }
    const float consts[2] = {0.0f, 1.0f};
    AV_TRY(consts_.alloc(be_.get(), sizeof(consts)));
    AV_TRY(be_->upload(consts_.data(), consts, sizeof(consts)));
    AV_TRY(be_->synchronize());
    finalized_ = true;
    return av_status::success();
}

// ---- batch state ------------------------------------------------------------------------------

av_status av_engine::ensure_state(int64_t B) {
    if (B <= cap_B_) return av_status::success();
    const av_model_config& c = cfg_;
    const int64_t R = 2 * B, C = c.width, H = c.heads, D = c.head_dim, T = c.seq_len, Lp = c.prefix_len;
    const int64_t G2 = c.grid * c.grid;
    cap_B_ = 0;
    auto f32 = [&](av_buffer& b, int64_t n) { return b.alloc(be_.get(), static_cast<size_t>(n) * sizeof(float)); };
    kv_k_.clear();
    kv_v_.clear();
    kv_k_.resize(static_cast<size_t>(c.depth));
    kv_v_.resize(static_cast<size_t>(c.depth));
    for (int64_t i = 0; i < c.depth; ++i) {
        const size_t kv_bytes = static_cast<size_t>(R * H * T * D) * av_dtype_size(c.kv_dtype);
        AV_TRY(kv_k_[i].alloc(be_.get(), kv_bytes));
        AV_TRY(kv_v_[i].alloc(be_.get(), kv_bytes));
    }
    AV_TRY(f32(x_, R * Lp * C));
    AV_TRY(f32(h_, R * Lp * C));
    AV_TRY(f32(qkv_, R * Lp * 3 * C));
    AV_TRY(f32(q_, R * Lp * C));
    AV_TRY(f32(o_, R * Lp * C));
    AV_TRY(f32(ff_, R * Lp * c.mlp_hidden));
    AV_TRY(f32(logits_, R * std::max<int64_t>(G2, 1) * c.vocab));
    AV_TRY(f32(idx_, B * G2));
    AV_TRY(f32(keys_, B));
    AV_TRY(f32(f_hat_, B * c.cvae * G2));
    AV_TRY(f32(codes_, B * c.cvae * G2));
    AV_TRY(f32(next_, B * G2 * c.cvae));
    int64_t mask_total = G2;
    for (int64_t k = 1; k < c.K; ++k) mask_total += c.patch_nums[k] * c.patch_nums[k];
    AV_TRY(f32(key_bias_, B * T));
    AV_TRY(f32(masks_, B * mask_total));
    cap_B_ = B;
    return av_status::success();
}

// SG maps on the host (float64, per image), the mask generator per level on the backend, and
// from its masks the key bias b = ln(m + 1e-6) (0 at the class token) [B, T] on the host.
av_status av_engine::build_masks(const av_prepare_args& a) {
    const av_model_config& c = cfg_;
    const int64_t B = a.B, T = c.seq_len, G = c.grid;
    mask_off_.assign(static_cast<size_t>(c.K), 0);
    std::vector<std::vector<double>> sn(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
        av_sg_structure_map(a.lr.data() + b * a.lr_h * a.lr_w * 3, a.lr_h, a.lr_w, &sn[b]);
    dbg_sg_.clear();
    int64_t off = 0;
    std::vector<float> sg;
    for (int64_t l = 0; l < c.K; ++l) {
        const int64_t n = l == 0 ? G : c.patch_nums[l];
        sg.assign(static_cast<size_t>(B * n * n), 0.0f);
        for (int64_t b = 0; b < B; ++b) av_sg_area_down(sn[b], a.lr_h, a.lr_w, n, sg.data() + b * n * n);
        if (a.debug) dbg_sg_.insert(dbg_sg_.end(), sg.begin(), sg.end());
        mask_off_[l] = off;
        AV_TRY(av_sca_level_masks(*be_, sca_, l, sg.data(), B, n, av_at(masks_.data(), off)));
        off += B * n * n;
    }
    std::vector<float> m;
    AV_TRY(download_f32(masks_.data(), off, &m));
    std::vector<float> kb(static_cast<size_t>(B * T), 0.0f);
    for (int64_t b = 0; b < B; ++b) {
        float* row = kb.data() + b * T;
        const float* m0 = m.data() + mask_off_[0] + b * G * G;
        for (int64_t j = 0; j < G * G; ++j) row[j] = std::log(m0[j] + 1e-6f);
        row[G * G] = 0.0f;  // class token
        for (int64_t k = 1; k < c.K; ++k) {
            const int64_t nn = c.patch_nums[k] * c.patch_nums[k];
            const float* mk = m.data() + mask_off_[k] + b * nn;
            for (int64_t j = 0; j < nn; ++j) row[c.seq_begin[k] + j] = std::log(mk[j] + 1e-6f);
        }
    }
    return be_->upload(key_bias_.data(), kb.data(), kb.size() * sizeof(float));
}

av_status av_engine::prepare(const av_prepare_args& a) {
    AV_CHECK(finalized_, "prepare: the model is not finalized");
    const av_model_config& c = cfg_;
    AV_CHECK(a.B >= 1, "prepare: at least one image");
    AV_CHECK(a.lr_h >= 1 && a.lr_w >= 1 && static_cast<int64_t>(a.lr.size()) == a.B * a.lr_h * a.lr_w * 3,
             "prepare: lr must hold [B, h, w, 3] bytes");
    AV_CHECK(static_cast<int64_t>(a.image_keys.size()) == a.B, "prepare: image_keys must hold B values");
    AV_TRY(ensure_state(a.B));
    const int64_t B = a.B, R = a.cfg != 0.0 ? 2 * B : B;
    const int64_t C = c.width, S = c.hr_size, G = c.grid, G2 = G * G, Lp = c.prefix_len;
    B_ = B;
    R_ = R;
    next_si_ = -1;
    refined_ = false;
    last_l_ = last_lh_ = 0;
    dbg_hr_in_.clear();
    dbg_lr_tokens_.clear();
    dbg_prefix_.clear();
    dbg_decoded_.clear();

    // LR u8 -> [0, 1] planes -> Pillow bicubic to S x S (float) -> 2x - 1      // [B, 3, S, S]
    std::vector<float> lr01(static_cast<size_t>(B * 3 * a.lr_h * a.lr_w));
    const int64_t hw = a.lr_h * a.lr_w;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < hw; ++i)
            for (int64_t ch = 0; ch < 3; ++ch)
                lr01[(b * 3 + ch) * hw + i] = static_cast<float>(a.lr[(b * hw + i) * 3 + ch] / 255.0);
    av_buffer lr_buf, hr_buf, ca, cb, tok_cm;
    AV_TRY(lr_buf.alloc(be_.get(), lr01.size() * sizeof(float)));
    AV_TRY(hr_buf.alloc(be_.get(), static_cast<size_t>(B * 3 * S * S) * sizeof(float)));
    AV_TRY(be_->upload(lr_buf.data(), lr01.data(), lr01.size() * sizeof(float)));
    const av_tensor hr = av_view(hr_buf.data(), {B * 3, S, S});
    AV_TRY(av_resample(*be_, av_view(lr_buf.data(), {B * 3, a.lr_h, a.lr_w}), hr, AV_RESAMPLE_PIL_BICUBIC));
    AV_TRY(download_f32(hr.data, B * 3 * S * S, &up01_));
    const av_tensor zero = av_view(consts_.data(), {1, 1}), one = av_view(av_at(consts_.data(), 1), {1, 1});
    const av_tensor hr2 = av_view(hr.data, {B * 3 * S, S});
    AV_TRY(av_binary(*be_, hr2, zero, hr2, AV_BIN_MUL, /*alpha=*/0.0f, /*beta=*/2.0f));
    AV_TRY(av_binary(*be_, hr2, one, hr2, AV_BIN_ADD, /*alpha=*/-1.0f));
    if (a.debug) AV_TRY(download_f32(hr.data, B * 3 * S * S, &dbg_hr_in_));

    // Conditioning net -> [B, C, G, G] -> LR tokens [B, G*G, C] (row-major positions).
    const int64_t act = av_condnet_max_act(cond_, B, S);
    AV_TRY(ca.alloc(be_.get(), static_cast<size_t>(act) * sizeof(float)));
    AV_TRY(cb.alloc(be_.get(), static_cast<size_t>(act) * sizeof(float)));
    AV_TRY(tok_cm.alloc(be_.get(), static_cast<size_t>(B * C * G2) * sizeof(float)));
    AV_TRY(av_condnet_forward(*be_, cond_, av_view(hr.data, {B, 3, S, S}), B, S, ca.data(), cb.data(),
                              av_view(tok_cm.data(), {B, C, G, G})));
    const av_tensor lrtok = av_view(h_.data(), {B * G2, C});
    AV_TRY(av_copy(*be_, av_transposed_cs(tok_cm.data(), B, C, G2, C * G2), av_view(h_.data(), {B, G2, C})));
    if (a.debug) AV_TRY(download_f32(lrtok.data, B * G2 * C, &dbg_lr_tokens_));

    // SCA masks and key bias; LR tokens * (1 + gamma_0 m_0).
    if (c.sca) {
        AV_TRY(build_masks(a));
        AV_TRY(av_binary(*be_, lrtok, av_view(av_at(masks_.data(), mask_off_[0]), {B * G2, 1}), lrtok, AV_BIN_MUL,
                         /*alpha=*/sca_.gamma[0], /*beta=*/1.0f));
    }

    // Prefix x [R, Lp, C] = concat(LR tokens, class_emb[label]) + pos_start + lvl_embed[0];
    // rows [0, B) carry label 0, rows [B, 2B) label num_classes - 1.
    for (int64_t r = 0; r < R; ++r) {
        const int64_t b = r % B;
        const int64_t label = r < B ? 0 : c.num_classes - 1;
        AV_TRY(be_->copy(av_at(x_.data(), r * Lp * C), av_at(h_.data(), b * G2 * C),
                         static_cast<size_t>(G2 * C) * sizeof(float)));
        AV_TRY(be_->copy(av_at(x_.data(), (r * Lp + G2) * C), av_at(class_emb_, label * C),
                         static_cast<size_t>(C) * sizeof(float)));
    }
    const av_tensor x = av_view(x_.data(), {R * Lp, C});
    AV_TRY(av_binary(*be_, x, av_view(pos_start_.data, {Lp, C}), x, AV_BIN_ADD));
    AV_TRY(av_binary(*be_, x, av_view(lvl_embed_.data, {1, C}), x, AV_BIN_ADD));
    if (a.debug) AV_TRY(download_f32(x.data, R * Lp * C, &dbg_prefix_));

    AV_TRY(be_->memset_zero(f_hat_.data(), static_cast<size_t>(B * c.cvae * G2) * sizeof(float)));
    AV_TRY(be_->upload(keys_.data(), a.image_keys.data(), static_cast<size_t>(B) * sizeof(int32_t)));
    AV_TRY(be_->synchronize());
    run_ = a;
    run_.lr.clear();
    next_si_ = 0;
    return av_status::success();
}

// ---- decode -----------------------------------------------------------------------------------

av_status av_engine::decode(const av_decode_args& a, std::vector<uint8_t>* rgb) {
    AV_CHECK(next_si_ == cfg_.K, "decode: every scale must have been stepped first");
    AV_CHECK(ref_.width == 0 || refined_, "decode: this model's refiner must run first (refine)");
    const int64_t B = B_, S = cfg_.hr_size, G2 = cfg_.grid * cfg_.grid, Cv = cfg_.cvae;
    // One image at a time bounds the decoder's scratch (it is the largest activation).
    if (dec_act_[0].data() == nullptr) {
        const int64_t act = av_decoder_act_floats(dec_, 1);
        for (auto& b : dec_act_) AV_TRY(b.alloc(be_.get(), static_cast<size_t>(act) * sizeof(float)));
        AV_TRY(dec_attn_.alloc(be_.get(), static_cast<size_t>(av_decoder_attn_floats(dec_, 1)) * sizeof(float)));
        AV_TRY(dec_out_.alloc(be_.get(), static_cast<size_t>(3 * S * S) * sizeof(float)));
        if (cfg_.decoder_lr) {
            AV_TRY(dec_base_.alloc(be_.get(), static_cast<size_t>(3 * S * S) * sizeof(float)));
            AV_TRY(dec_lr_.alloc(be_.get(), static_cast<size_t>(3 * (S / 2) * (S / 2)) * sizeof(float)));
        }
    }
    av_decoder_ws ws;
    for (int i = 0; i < 3; ++i) ws.act[i] = dec_act_[i].data();
    ws.attn = dec_attn_.data();
    ws.lr = dec_lr_.data();
    rgb->assign(static_cast<size_t>(B * S * S * 3), 0);
    dbg_decoded_.clear();
    std::vector<float> out;
    for (int64_t b = 0; b < B; ++b) {
        const av_tensor f = av_view(av_at(f_hat_.data(), b * Cv * G2), {1, Cv, cfg_.grid, cfg_.grid});
        av_tensor base;
        if (cfg_.decoder_lr) {  // base = 2 up01 - 1 in fp32, as the reference's residual_base
            std::vector<float> hb(up01_.begin() + b * 3 * S * S, up01_.begin() + (b + 1) * 3 * S * S);
            for (float& v : hb) v = v * 2.0f - 1.0f;
            AV_TRY(be_->upload(dec_base_.data(), hb.data(), hb.size() * sizeof(float)));
            base = av_view(dec_base_.data(), {1, 3, S, S});
        }
        AV_TRY(av_decoder_forward(*be_, dec_, f, 1, ws, av_view(dec_out_.data(), {1, 3, S, S}), base));
        AV_TRY(download_f32(dec_out_.data(), 3 * S * S, &out));
        if (run_.debug) dbg_decoded_.insert(dbg_decoded_.end(), out.begin(), out.end());
        if (a.residual_scale > 0.0f) {  // residual latent: add the upsampled LR back (fp32, as the reference)
            const float* up = up01_.data() + b * 3 * S * S;
            for (int64_t i = 0; i < 3 * S * S; ++i) out[i] = (up[i] * 2.0f - 1.0f) + out[i] * a.residual_scale;
        }
        const float* src = a.color_fix != AV_COLOR_FIX_NONE ? up01_.data() + b * 3 * S * S : nullptr;
        av_postprocess(out.data(), src, S, rgb->data() + b * S * S * 3, a.color_fix == AV_COLOR_FIX_WAVELET);
    }
    return av_status::success();
}

// ---- debug ------------------------------------------------------------------------------------

// Names: hr_in [B,3,S,S], up01 [B,3,S,S], lr_tokens [B,G*G,C], sg (levels concatenated, each
// [B,n,n]), masks (same layout), key_bias [B,T], prefix_x [R,Lp,C] (kept with debug), x (the
// residual stream after the last step) [R,L,C], logits (raw, last step) [R,Lh,V], f_hat
// [B,Cv,G,G], decoded (decoder output before the clamp) [B,3,S,S]; with the refiner (kept with
// debug): refiner_z [R*G*G,C], refiner_noise (the initial draw) [B*G*G,Cv], and per sampler
// step n = 9 .. 0 the guided eps and the new x, refiner_eps / refiner_x [10,B*G*G,Cv].
av_status av_engine::debug(const std::string& name, std::vector<float>* data, std::vector<int64_t>* shape) {
    const av_model_config& c = cfg_;
    const int64_t B = B_, R = R_, S = c.hr_size, G = c.grid, C = c.width;
    AV_CHECK(B > 0, "debug: no batch was prepared");
    int64_t mask_total = G * G;
    for (int64_t k = 1; k < c.K; ++k) mask_total += c.patch_nums[k] * c.patch_nums[k];
    auto host = [&](const std::vector<float>& v, std::vector<int64_t> sh) -> av_status {
        AV_CHECK(!v.empty(), "debug: '" + name + "' was not kept (prepare with debug: true)");
        *data = v;
        *shape = std::move(sh);
        return av_status::success();
    };
    if (name == "hr_in") return host(dbg_hr_in_, {B, 3, S, S});
    if (name == "up01") return host(up01_, {B, 3, S, S});
    if (name == "lr_tokens") return host(dbg_lr_tokens_, {B, G * G, C});
    if (name == "prefix_x") return host(dbg_prefix_, {R, c.prefix_len, C});
    if (name == "sg") return host(dbg_sg_, {B * mask_total});
    if (name == "decoded") return host(dbg_decoded_, {B, 3, S, S});
    const int64_t Lg = G * G, Cv = c.cvae;
    if (name == "refiner_z") return host(dbg_ref_z_, {R * Lg, C});
    if (name == "refiner_noise") return host(dbg_ref_noise_, {B * Lg, Cv});
    if (name == "refiner_eps") return host(dbg_ref_eps_, {AV_REFINER_STEPS, B * Lg, Cv});
    if (name == "refiner_x") return host(dbg_ref_x_, {AV_REFINER_STEPS, B * Lg, Cv});
    if (name == "masks") {
        AV_CHECK(c.sca, "debug: masks need SCA");
        *shape = {B * mask_total};
        return download_f32(masks_.data(), B * mask_total, data);
    }
    if (name == "key_bias") {
        AV_CHECK(c.sca, "debug: key_bias needs SCA");
        *shape = {B, c.seq_len};
        return download_f32(key_bias_.data(), B * c.seq_len, data);
    }
    if (name == "f_hat") {
        *shape = {B, c.cvae, G, G};
        return download_f32(f_hat_.data(), B * c.cvae * G * G, data);
    }
    AV_CHECK(last_l_ > 0, "debug: '" + name + "' needs a step first");
    if (name == "x") {
        *shape = {R, last_l_, C};
        return download_f32(x_.data(), R * last_l_ * C, data);
    }
    if (name == "logits") {
        *shape = {R, last_lh_, c.vocab};
        return download_f32(logits_.data(), R * last_lh_ * c.vocab, data);
    }
    return av_status::error(AV_ERR_INVALID, "debug: unknown name '" + name + "'");
}
