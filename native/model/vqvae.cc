// Reference: training/avtrain/vqvae.py. Buffers: the activation rotates through three
// scratch buffers of the largest activation size; ResBlocks and AttnBlocks write their result
// in place where the channel count allows (conv `res` aliasing `y`).
//
// AttnBlock (single head, width c, N = H*W positions) as the reference's bmm formulation:
//   hT = GN(x)^T [N, c];  qT = hT Wq^T + bq, kT = hT Wk^T + bk  [N, c];  v = Wv GN(x) + bv [c, N]
//   S = softmax(qT kT^T * c^-0.5) [N, N];  h = v S^T [c, N];  out = x + proj_out(h)
// The batched products are av_linear with per-image weights (batch_w = nb).
#include "vqvae.h"

#include <algorithm>
#include <cmath>

#include "nn.h"

namespace {

struct dec_ctx {
    av_backend& be;
    const av_decoder_ws& ws;
    int64_t nb;
};

// The two scratch buffer indices other than `cur`.
void others(int cur, int* a, int* b) {
    *a = (cur + 1) % 3;
    *b = (cur + 2) % 3;
}

// out = nin_shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))             // [nb, cout, r, r]
av_status resblock(dec_ctx& c, const av_resblock_w& w, int* cur, int64_t r) {
    int t1, t2;
    others(*cur, &t1, &t2);
    const int64_t nb = c.nb;
    const av_tensor x = av_view(c.ws.act[*cur], {nb, w.cin, r, r});
    const av_tensor a_in = av_view(c.ws.act[t1], {nb, w.cin, r, r});
    const av_tensor a_out = av_view(c.ws.act[t1], {nb, w.cout, r, r});
    const av_tensor h = av_view(c.ws.act[t2], {nb, w.cout, r, r});
    AV_TRY(av_groupnorm(c.be, x, w.norm1_w, w.norm1_b, a_in, /*silu=*/true));
    AV_TRY(av_conv(c.be, a_in, w.conv1_w, w.conv1_b, h, 1, 1));
    AV_TRY(av_groupnorm(c.be, h, w.norm2_w, w.norm2_b, a_out, /*silu=*/true));
    if (w.cin == w.cout) {
        AV_TRY(av_conv(c.be, a_out, w.conv2_w, w.conv2_b, x, 1, 1, AV_ACT_NONE, x));
        return av_status::success();
    }
    // h is free again: shortcut into it, then add conv2 on top.
    AV_TRY(av_conv(c.be, x, w.nin_w, w.nin_b, h, 1, 0));
    AV_TRY(av_conv(c.be, a_out, w.conv2_w, w.conv2_b, h, 1, 1, AV_ACT_NONE, h));
    *cur = t2;
    return av_status::success();
}

// x = x + proj_out(attention(GN(x))), in place                             // [nb, c, r, r]
av_status attnblock(dec_ctx& c, const av_attnblock_w& w, int cur, int64_t r) {
    int t1, t2;
    others(cur, &t1, &t2);
    const int64_t nb = c.nb, C = w.c, N = r * r;
    const av_tensor x = av_view(c.ws.act[cur], {nb, C, r, r});
    const av_tensor hn = av_view(c.ws.act[t1], {nb, C, r, r});
    float* at = static_cast<float*>(c.ws.attn);
    void* hT = at;                       // [nb, N, C]
    void* qT = at + nb * N * C;          // [nb, N, C]
    void* kT = at + 2 * nb * N * C;      // [nb, N, C]
    void* v = at + 3 * nb * N * C;       // [nb, C, N]
    void* hh = at + 4 * nb * N * C;      // [nb, C, N]
    void* S = at + 5 * nb * N * C;       // [nb, N, N]
    AV_TRY(av_groupnorm(c.be, x, w.norm_w, w.norm_b, hn, /*silu=*/false));
    AV_TRY(av_copy(c.be, av_transposed_cs(hn.data, nb, C, N, C * N), av_view(hT, {nb, N, C})));
    AV_TRY(av_linear(c.be, av_view(hT, {nb * N, C}), w.q_w, w.q_b, av_view(qT, {nb * N, C})));
    AV_TRY(av_linear(c.be, av_view(hT, {nb * N, C}), w.k_w, w.k_b, av_view(kT, {nb * N, C})));
    AV_TRY(av_conv(c.be, hn, w.v_w, w.v_b, av_view(v, {nb, C, r, r}), 1, 0));
    // S = qT kT^T (per image), softmax over keys with scale c^-0.5            // [nb, N, N]
    AV_TRY(av_linear(c.be, av_view(qT, {nb, N, C}), av_view(kT, {nb, N, C}), av_tensor(), av_view(S, {nb, N, N})));
    av_softmax_params sp;
    sp.x = av_view(S, {nb * N, N});
    sp.y = sp.x;
    sp.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(C)));
    AV_TRY(av_compute(c.be, AV_OP_SOFTMAX, sp));
    // h[ch, i] = sum_j v[ch, j] S[i, j]                                      // [nb, C, N]
    AV_TRY(av_linear(c.be, av_view(v, {nb, C, N}), av_view(S, {nb, N, N}), av_tensor(), av_view(hh, {nb, C, N})));
    AV_TRY(av_conv(c.be, av_view(hh, {nb, C, r, r}), w.proj_w, w.proj_b, x, 1, 0, AV_ACT_NONE, x));
    return av_status::success();
}

}  // namespace

int64_t av_decoder_act_floats(const av_decoder_w& w, int64_t nb) {
    int64_t r = w.grid, best = w.cvae * r * r;
    best = std::max(best, w.mid1.cin * r * r);
    for (int64_t l = static_cast<int64_t>(w.levels.size()) - 1; l >= 0; --l) {
        for (const auto& b : w.levels[l].blocks) best = std::max(best, std::max(b.cin, b.cout) * r * r);
        if (av_tensor_present(w.levels[l].up_w)) {
            r *= 2;
            best = std::max(best, w.levels[l].blocks.back().cout * r * r);
        }
    }
    best = std::max(best, 3 * r * r);
    return nb * best;
}

int64_t av_decoder_attn_floats(const av_decoder_w& w, int64_t nb) {
    const int64_t N = w.grid * w.grid, C = w.mid_attn.c;
    return nb * (5 * N * C + N * N);
}

av_status av_decoder_forward(av_backend& be, const av_decoder_w& w, const av_tensor& f_hat, int64_t nb,
                             const av_decoder_ws& ws, const av_tensor& out, const av_tensor& base) {
    dec_ctx c{be, ws, nb};
    int64_t r = w.grid;
    const int64_t Cv = w.cvae, Ctop = w.mid1.cin;
    // post_quant_conv, conv_in                                                // [nb, Ctop, G, G]
    AV_TRY(av_conv(be, f_hat, w.post_quant_w, w.post_quant_b, av_view(ws.act[1], {nb, Cv, r, r}), 1, 1));
    AV_TRY(av_conv(be, av_view(ws.act[1], {nb, Cv, r, r}), w.conv_in_w, w.conv_in_b,
                   av_view(ws.act[0], {nb, Ctop, r, r}), 1, 1));
    int cur = 0;
    AV_TRY(resblock(c, w.mid1, &cur, r));
    AV_TRY(attnblock(c, w.mid_attn, cur, r));
    AV_TRY(resblock(c, w.mid2, &cur, r));
    int64_t ch = Ctop;
    for (int64_t l = static_cast<int64_t>(w.levels.size()) - 1; l >= 0; --l) {
        const auto& lv = w.levels[l];
        if (av_tensor_present(lv.lr_w)) {
            // h += lr_in_l(area_down(base, r))                                    // [nb, ch, r, r]
            AV_CHECK(av_tensor_present(base), "decoder: an LR-conditioned decoder needs the base image");
            const int64_t S = base.ne[0];
            av_tensor b = av_view(base.data, {nb, 3, S, S});
            if (r != S) {
                AV_TRY(av_resample(be, av_view(base.data, {nb * 3, S, S}), av_view(ws.lr, {nb * 3, r, r}),
                                   AV_RESAMPLE_AREA));
                b = av_view(ws.lr, {nb, 3, r, r});
            }
            const av_tensor h = av_view(ws.act[cur], {nb, ch, r, r});
            AV_TRY(av_conv(be, b, lv.lr_w, lv.lr_b, h, 1, 1, AV_ACT_NONE, h));
        }
        for (size_t b = 0; b < lv.blocks.size(); ++b) {
            AV_TRY(resblock(c, lv.blocks[b], &cur, r));
            ch = lv.blocks[b].cout;
            if (!lv.attns.empty()) AV_TRY(attnblock(c, lv.attns[b], cur, r));
        }
        if (av_tensor_present(lv.up_w)) {
            // Up2x: nearest x2 then Conv3x3                                       // [nb, ch, 2r, 2r]
            int t1, t2;
            others(cur, &t1, &t2);
            AV_TRY(av_resample(be, av_view(ws.act[cur], {nb * ch, r, r}), av_view(ws.act[t1], {nb * ch, 2 * r, 2 * r}),
                               AV_RESAMPLE_NEAREST));
            AV_TRY(av_conv(be, av_view(ws.act[t1], {nb, ch, 2 * r, 2 * r}), lv.up_w, lv.up_b,
                           av_view(ws.act[t2], {nb, ch, 2 * r, 2 * r}), 1, 1));
            cur = t2;
            r *= 2;
        }
    }
    // conv_out(SiLU(GN(h)))                                                    // [nb, 3, S, S]
    int t1, t2;
    others(cur, &t1, &t2);
    const av_tensor h = av_view(ws.act[cur], {nb, ch, r, r});
    const av_tensor hn = av_view(ws.act[t1], {nb, ch, r, r});
    AV_TRY(av_groupnorm(be, h, w.norm_out_w, w.norm_out_b, hn, /*silu=*/true));
    AV_TRY(av_conv(be, hn, w.conv_out_w, w.conv_out_b, out, 1, 1));
    return av_status::success();
}
