// The diffusion refiner stage of av_engine (spec 6.2): z from the last scale, the 10-step
// iDDPM sampler over SimpleMLPAdaLN, and f_hat += 0.6 x. Written only against core/ops.h: the
// network is linears, LayerNorms (AdaLN modulation as their scale/shift operands) and one SiLU;
// the sampler's element arithmetic and Philox draws are the diffusion_step op.
// Reference: training/avtrain/refiner.py (SimpleMLPAdaLN.forward, refiner_schedule, refine).
#include "refiner.h"

#include <cmath>

#include "engine.h"
#include "nn.h"

av_refiner_schedule av_refiner_schedule_make() {
    auto abar_fn = [](double u) {
        const double c = std::cos((u + 0.008) / 1.008 * M_PI / 2);
        return c * c;
    };
    std::vector<double> abar_full(AV_REFINER_BASE_STEPS);
    double acc = 1.0;
    for (int i = 0; i < AV_REFINER_BASE_STEPS; ++i) {
        const double b = std::min(1 - abar_fn(static_cast<double>(i + 1) / AV_REFINER_BASE_STEPS) /
                                          abar_fn(static_cast<double>(i) / AV_REFINER_BASE_STEPS),
                                  0.999);
        acc *= 1.0 - b;
        abar_full[i] = acc;
    }
    av_refiner_schedule s;
    const double stride = static_cast<double>(AV_REFINER_BASE_STEPS - 1) / (AV_REFINER_STEPS - 1);
    double last = 1.0, ab = 1.0;
    for (int n = 0; n < AV_REFINER_STEPS; ++n) {
        const int64_t t = std::llround(n * stride);  // Python round() of exact multiples of 111
        s.timestep[n] = t;
        s.beta[n] = 1 - abar_full[t] / last;
        last = abar_full[t];
        s.abar_prev[n] = ab;
        ab *= 1.0 - s.beta[n];
        s.abar[n] = ab;
    }
    double pv[AV_REFINER_STEPS];
    for (int n = 0; n < AV_REFINER_STEPS; ++n) {
        pv[n] = s.beta[n] * (1.0 - s.abar_prev[n]) / (1.0 - s.abar[n]);
        s.coef1[n] = s.beta[n] * std::sqrt(s.abar_prev[n]) / (1.0 - s.abar[n]);
        s.coef2[n] = (1.0 - s.abar_prev[n]) * std::sqrt(1.0 - s.beta[n]) / (1.0 - s.abar[n]);
    }
    for (int n = 0; n < AV_REFINER_STEPS; ++n) s.post_log_var[n] = std::log(n == 0 ? pv[1] : pv[n]);
    return s;
}

void av_refiner_timestep_embedding(int64_t t, float* out) {
    const int64_t half = AV_REFINER_FREQ / 2;
    const float neg_log = static_cast<float>(-std::log(10000.0));
    for (int64_t i = 0; i < half; ++i) {
        const float f = std::exp(neg_log * static_cast<float>(i) / static_cast<float>(half));
        const float a = static_cast<float>(t) * f;
        out[i] = std::cos(a);
        out[half + i] = std::sin(a);
    }
}

namespace {

// Rows [0, M) in calls of L rows each when L is small (core batch invariance, transformer.h
// AV_ROW_SPLIT_MAX_L), gate and res sliced with them; one call otherwise.
av_status lin_rows(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& b, const av_tensor& y,
                   int64_t L, int32_t act = AV_ACT_NONE, const av_tensor& gate = av_tensor(),
                   const av_tensor& res = av_tensor()) {
    const int64_t K = x.ne[0], M = x.ne[1], N = y.ne[0];
    if (L > AV_ROW_SPLIT_MAX_L || L >= M) return av_linear(be, x, w, b, y, act, gate, 1, res);
    for (int64_t r = 0; r < M; r += L) {
        const av_tensor g = av_tensor_present(gate) ? av_view(av_at(gate, r * N), {L, N}) : av_tensor();
        const av_tensor rr = av_tensor_present(res) ? av_view(av_at(res, r * N), {L, N}) : av_tensor();
        AV_TRY(av_linear(be, av_view(av_at(x, r * K), {L, K}), w, b, av_view(av_at(y, r * N), {L, N}), act, g, 1, rr));
    }
    return av_status::success();
}

// Rows [j W, (j + 1) W) of a [k W, W] weight and its bias: one chunk of an AdaLN projection.
av_tensor chunk_w(const av_tensor& w, int64_t j, int64_t W) { return av_view(av_at(w, j * W * W), {W, W}, w.dtype); }
av_tensor chunk_b(const av_tensor& b, int64_t j, int64_t W) { return av_view(av_at(b, j * W), {W}); }

// (LN(x) * w + b) * (1 + scale) + shift per row (scale/shift [M, W], one row each), eps 1e-6.
av_status layernorm(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& b,
                    const av_tensor& scale, const av_tensor& shift, const av_tensor& y) {
    return av_layernorm(be, x, y, scale, shift, /*rows_per_group=*/1, 1e-6f, w, b);
}

}  // namespace

av_status av_engine::ensure_refiner_state(int64_t rows) {
    if (rows <= ref_cap_rows_) return av_status::success();
    const int64_t W = ref_.width, C = cfg_.width, Cv = cfg_.cvae;
    auto f32 = [&](av_buffer& b, int64_t n) { return b.alloc(be_.get(), static_cast<size_t>(n) * sizeof(float)); };
    ref_cap_rows_ = 0;
    for (av_buffer* b : {&ref_c_, &ref_sy_, &ref_a_, &ref_h_, &ref_t_, &ref_shift_, &ref_scale_, &ref_gate_})
        AV_TRY(f32(*b, rows * W));
    AV_TRY(f32(ref_z_, rows * C));
    AV_TRY(f32(ref_xin_, rows * Cv));
    AV_TRY(f32(ref_o_, rows * 2 * Cv));
    AV_TRY(f32(ref_x_, rows * Cv));
    AV_TRY(f32(ref_eps_, rows * Cv));
    AV_TRY(f32(ref_temb_, AV_REFINER_FREQ + 2 * W));
    ref_cap_rows_ = rows;
    return av_status::success();
}

av_status av_engine::refine() {
    const av_model_config& c = cfg_;
    AV_CHECK(ref_.width > 0, "refine: the model has no refiner (or it was turned off)");
    AV_CHECK(next_si_ == c.K && !refined_, "refine: every scale must have been stepped first, and refine run once");
    const int64_t B = B_, R = R_, H = R / B, C = c.width, Cv = c.cvae, W = ref_.width;
    const int64_t L = c.grid * c.grid, N = B * L, M = H * N;
    AV_TRY(ensure_refiner_state(M));
    av_backend& be = *be_;

    // z = decoder_norm(Hlast + word_embed(E[idx9])) for both halves, idx9 from the conditional
    // half (spec 6.2); Hlast is the residual stream after the last scale (the head_nm input).
    const av_tensor z = av_view(ref_z_.data(), {M, C});
    av_vq_lookup_params lp;
    lp.idx = av_view(idx_.data(), {B, L}, AV_I32);
    lp.codebook = codebook_;
    lp.y = av_view(ref_xin_.data(), {B, L, Cv});
    lp.channel_major = 0;
    AV_TRY(av_compute(be, AV_OP_VQ_LOOKUP, lp));
    const av_tensor emb = av_view(h_.data(), {N, C});  // the transformer's scratch, free after the last scale
    AV_TRY(lin_rows(be, av_view(ref_xin_.data(), {N, Cv}), word_w_, word_b_, emb, L));
    AV_TRY(av_binary(be, av_view(x_.data(), {M, C}), emb, z, AV_BIN_ADD));  // b repeats every N rows
    AV_TRY(layernorm(be, z, ref_.norm_w, ref_.norm_b, av_tensor(), av_tensor(), z));
    if (run_.debug) AV_TRY(download_f32(z.data, M * C, &dbg_ref_z_));

    // c = cond_embed(z), kept for every step.                                    // [M, W]
    const av_tensor cz = av_view(ref_c_.data(), {M, W});
    AV_TRY(lin_rows(be, z, ref_.cond_w, ref_.cond_b, cz, L));

    const av_tensor x = av_view(ref_x_.data(), {N, Cv}), xin = av_view(ref_xin_.data(), {M, Cv});
    const av_tensor keys = av_view(keys_.data(), {B}, AV_I32);
    av_diffusion_step_params dp;
    dp.x = x;
    dp.image_key = keys;
    dp.tokens = L;
    dp.seed = run_.seed;
    dp.init = 1;
    dp.stream = AV_REFINER_STREAM + AV_REFINER_STEPS;
    AV_TRY(av_compute(be, AV_OP_DIFFUSION_STEP, dp));
    if (run_.debug) AV_TRY(download_f32(x.data, N * Cv, &dbg_ref_noise_));

    const av_refiner_schedule sch = av_refiner_schedule_make();
    const av_tensor sy = av_view(ref_sy_.data(), {M, W}), a = av_view(ref_a_.data(), {M, W});
    const av_tensor hh = av_view(ref_h_.data(), {M, W}), t1 = av_view(ref_t_.data(), {M, W});
    const av_tensor shift = av_view(ref_shift_.data(), {M, W}), scale = av_view(ref_scale_.data(), {M, W});
    const av_tensor gate = av_view(ref_gate_.data(), {M, W});
    const av_tensor o = av_view(ref_o_.data(), {M, 2 * Cv});
    const av_tensor e0 = av_view(ref_temb_.data(), {1, AV_REFINER_FREQ});
    const av_tensor e1 = av_view(av_at(ref_temb_.data(), AV_REFINER_FREQ), {1, W});
    const av_tensor temb = av_view(av_at(ref_temb_.data(), AV_REFINER_FREQ + W), {1, W});
    dbg_ref_eps_.clear();
    dbg_ref_x_.clear();
    std::vector<float> host_e(AV_REFINER_FREQ), tmp;
    for (int n = AV_REFINER_STEPS - 1; n >= 0; --n) {
        // The network on [x ; x] (both halves read the conditional x), timestep S_n.
        for (int64_t h = 0; h < H; ++h)
            AV_TRY(be.copy(av_at(ref_xin_.data(), h * N * Cv), x.data, static_cast<size_t>(N * Cv) * sizeof(float)));
        av_refiner_timestep_embedding(sch.timestep[n], host_e.data());
        AV_TRY(be.upload(e0.data, host_e.data(), host_e.size() * sizeof(float)));
        AV_TRY(av_linear(be, e0, ref_.t0_w, ref_.t0_b, e1, AV_ACT_SILU));
        AV_TRY(av_linear(be, e1, ref_.t2_w, ref_.t2_b, temb));
        // sy = SiLU(temb + c): every AdaLN projection reads SiLU(y).
        AV_TRY(av_binary(be, cz, temb, sy, AV_BIN_ADD));
        AV_TRY(av_unary(be, sy, sy, AV_ACT_SILU));
        AV_TRY(lin_rows(be, xin, ref_.in_w, ref_.in_b, a, L));
        for (const auto& blk : ref_.res) {
            AV_TRY(lin_rows(be, sy, chunk_w(blk.ada_w, 0, W), chunk_b(blk.ada_b, 0, W), shift, L));
            AV_TRY(lin_rows(be, sy, chunk_w(blk.ada_w, 1, W), chunk_b(blk.ada_b, 1, W), scale, L));
            AV_TRY(lin_rows(be, sy, chunk_w(blk.ada_w, 2, W), chunk_b(blk.ada_b, 2, W), gate, L));
            AV_TRY(layernorm(be, a, blk.ln_w, blk.ln_b, scale, shift, hh));         // LN(a)(1+scale)+shift
            AV_TRY(lin_rows(be, hh, blk.m0_w, blk.m0_b, t1, L, AV_ACT_SILU));
            AV_TRY(lin_rows(be, t1, blk.m2_w, blk.m2_b, a, L, AV_ACT_NONE, gate, a));  // a += gate * mlp
        }
        AV_TRY(lin_rows(be, sy, chunk_w(ref_.fin_ada_w, 0, W), chunk_b(ref_.fin_ada_b, 0, W), shift, L));
        AV_TRY(lin_rows(be, sy, chunk_w(ref_.fin_ada_w, 1, W), chunk_b(ref_.fin_ada_b, 1, W), scale, L));
        AV_TRY(layernorm(be, a, av_tensor(), av_tensor(), scale, shift, hh));
        AV_TRY(lin_rows(be, hh, ref_.fin_w, ref_.fin_b, o, L));

        // The sampler step; guidance w = the last scale's t = cfg (spec 6.2).
        dp = av_diffusion_step_params();
        dp.x = x;
        dp.o = o;
        dp.image_key = keys;
        dp.eps_out = run_.debug ? av_view(ref_eps_.data(), {N, Cv}) : av_tensor();
        dp.tokens = L;
        dp.halves = static_cast<int32_t>(H);
        dp.noise = n > 0 ? 1 : 0;
        dp.stream = AV_REFINER_STREAM + n;
        dp.seed = run_.seed;
        dp.w = static_cast<float>(run_.cfg);
        dp.c_x = static_cast<float>(std::sqrt(1.0 / sch.abar[n]));
        dp.c_eps = static_cast<float>(std::sqrt(1.0 / sch.abar[n] - 1.0));
        dp.coef1 = static_cast<float>(sch.coef1[n]);
        dp.coef2 = static_cast<float>(sch.coef2[n]);
        dp.log_beta = static_cast<float>(std::log(sch.beta[n]));
        dp.post_log_var = static_cast<float>(sch.post_log_var[n]);
        AV_TRY(av_compute(be, AV_OP_DIFFUSION_STEP, dp));
        if (run_.debug) {
            AV_TRY(download_f32(ref_eps_.data(), N * Cv, &tmp));
            dbg_ref_eps_.insert(dbg_ref_eps_.end(), tmp.begin(), tmp.end());
            AV_TRY(download_f32(x.data, N * Cv, &tmp));
            dbg_ref_x_.insert(dbg_ref_x_.end(), tmp.begin(), tmp.end());
        }
    }

    // f_hat += 0.6 x, token l = r G + c of image b -> f_hat[b, :, r, c].
    const int64_t G2 = L;
    AV_TRY(av_copy(be, av_transposed_cs(x.data, B, L, Cv, L * Cv), av_view(codes_.data(), {B, Cv, G2})));
    const av_tensor fh = av_view(f_hat_.data(), {B * Cv, G2});
    AV_TRY(av_binary(be, fh, av_view(codes_.data(), {B * Cv, G2}), fh, AV_BIN_ADD, AV_REFINER_VAE_SCALE));
    AV_TRY(be.synchronize());
    refined_ = true;
    return av_status::success();
}
