// Reference: training/avtrain/sca.py. The structure map follows the reference's float64
// evaluation order exactly (separable blur: horizontal pass then vertical, taps accumulated in
// order t = 0..4 from zero), so SG maps match it to the final fp32 rounding.
#include "sca.h"

#include <algorithm>
#include <cmath>

#include "config.h"
#include "nn.h"
#include "weights.h"

namespace {

const double k_binomial5[5] = {1.0, 4.0, 6.0, 4.0, 1.0};

// Reflect-101 index (-1 -> 1, n -> n-2) for any offset, n >= 1.
int64_t reflect101(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i > n - 1 ? period - i : i;
}

// Separable [1,4,6,4,1]/16 blur of a [h, w] plane: along w first, then along h.
std::vector<double> blur(const std::vector<double>& x, int64_t h, int64_t w) {
    std::vector<double> t(x.size(), 0.0), y(x.size(), 0.0);
    for (int64_t r = 0; r < h; ++r)
        for (int64_t c = 0; c < w; ++c) {
            double acc = 0.0;
            for (int k = 0; k < 5; ++k) acc = acc + (k_binomial5[k] / 16.0) * x[r * w + reflect101(c + k - 2, w)];
            t[r * w + c] = acc;
        }
    for (int64_t r = 0; r < h; ++r)
        for (int64_t c = 0; c < w; ++c) {
            double acc = 0.0;
            for (int k = 0; k < 5; ++k) acc = acc + (k_binomial5[k] / 16.0) * t[reflect101(r + k - 2, h) * w + c];
            y[r * w + c] = acc;
        }
    return y;
}

// REDUCE: blur, keep even rows and columns ([ceil(h/2), ceil(w/2)]).
std::vector<double> reduce2(const std::vector<double>& g, int64_t h, int64_t w, int64_t* ho, int64_t* wo) {
    const std::vector<double> b = blur(g, h, w);
    *ho = (h + 1) / 2;
    *wo = (w + 1) / 2;
    std::vector<double> out(static_cast<size_t>(*ho * *wo));
    for (int64_t r = 0; r < *ho; ++r)
        for (int64_t c = 0; c < *wo; ++c) out[r * *wo + c] = b[(2 * r) * w + 2 * c];
    return out;
}

// EXPAND: x [hx, wx] at the even coordinates of a zero [h, w] image, then 4 * blur.
std::vector<double> expand2(const std::vector<double>& x, int64_t hx, int64_t wx, int64_t h, int64_t w) {
    std::vector<double> z(static_cast<size_t>(h * w), 0.0);
    for (int64_t r = 0; r < hx && 2 * r < h; ++r)
        for (int64_t c = 0; c < wx && 2 * c < w; ++c) z[(2 * r) * w + 2 * c] = x[r * wx + c];
    std::vector<double> b = blur(z, h, w);
    for (double& v : b) v = 4.0 * v;
    return b;
}

}  // namespace

void av_sg_structure_map(const uint8_t* rgb, int64_t h, int64_t w, std::vector<double>* sn) {
    // The reference's native LR is fp32 (u8 / 255 in float64, rounded once), widened again.
    std::vector<double> y(static_cast<size_t>(h * w));
    for (int64_t i = 0; i < h * w; ++i) {
        const double r = static_cast<float>(rgb[3 * i] / 255.0);
        const double g = static_cast<float>(rgb[3 * i + 1] / 255.0);
        const double b = static_cast<float>(rgb[3 * i + 2] / 255.0);
        y[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    }
    int64_t h1, w1, h2, w2;
    const std::vector<double> g1 = reduce2(y, h, w, &h1, &w1);
    const std::vector<double> g2 = reduce2(g1, h1, w1, &h2, &w2);
    const std::vector<double> e1 = expand2(g1, h1, w1, h, w);
    const std::vector<double> e2 = expand2(g2, h2, w2, h1, w1);
    std::vector<double> l1a(g1.size());
    for (size_t i = 0; i < g1.size(); ++i) l1a[i] = std::fabs(g1[i] - e2[i]);
    const std::vector<double> el1 = expand2(l1a, h1, w1, h, w);
    sn->assign(static_cast<size_t>(h * w), 0.0);
    double smin = INFINITY, smax = -INFINITY;
    for (int64_t i = 0; i < h * w; ++i) {
        const double s = std::fabs(y[i] - e1[i]) + el1[i];
        (*sn)[i] = s;
        smin = std::min(smin, s);
        smax = std::max(smax, s);
    }
    const double den = std::max(smax - smin, 1e-6);
    for (double& v : *sn) v = (v - smin) / den;
}

void av_sg_area_down(const std::vector<double>& x, int64_t h, int64_t w, int64_t n, float* y) {
    for (int64_t oh = 0; oh < n; ++oh) {
        const int64_t h0 = (oh * h) / n, h1 = ((oh + 1) * h + n - 1) / n;
        for (int64_t ow = 0; ow < n; ++ow) {
            const int64_t w0 = (ow * w) / n, w1 = ((ow + 1) * w + n - 1) / n;
            double sum = 0.0;
            for (int64_t r = h0; r < h1; ++r)
                for (int64_t c = w0; c < w1; ++c) sum += x[r * w + c];
            y[oh * n + ow] = static_cast<float>(sum / static_cast<double>(h1 - h0) / static_cast<double>(w1 - w0));
        }
    }
}

av_status av_sca_level_masks(av_backend& be, const av_sca_w& w, int64_t level, const float* sg, int64_t B, int64_t n,
                             void* m_out) {
    const int64_t nn = n * n, E = AV_SCA_EMBED, Hd = AV_SCA_HIDDEN;
    AV_CHECK(static_cast<int64_t>(w.level_embed.size()) > level * E, "sca: level embedding out of range");
    // X = concat(SG_l, broadcast(e_l))                                     // [B, 1+E, n, n]
    std::vector<float> x9(static_cast<size_t>(B * (1 + E) * nn));
    for (int64_t b = 0; b < B; ++b) {
        float* xb = x9.data() + b * (1 + E) * nn;
        std::copy(sg + b * nn, sg + (b + 1) * nn, xb);
        for (int64_t e = 0; e < E; ++e) std::fill(xb + (1 + e) * nn, xb + (2 + e) * nn, w.level_embed[level * E + e]);
    }
    av_buffer bx, bh1, bh2, bh33;
    AV_TRY(bx.alloc(&be, x9.size() * sizeof(float)));
    AV_TRY(bh1.alloc(&be, static_cast<size_t>(B * Hd * nn) * sizeof(float)));
    AV_TRY(bh2.alloc(&be, static_cast<size_t>(B * Hd * nn) * sizeof(float)));
    AV_TRY(bh33.alloc(&be, static_cast<size_t>(B * (Hd + 1) * nn) * sizeof(float)));
    AV_TRY(be.upload(bx.data(), x9.data(), x9.size() * sizeof(float)));
    const av_tensor x = av_view(bx.data(), {B, 1 + E, n, n});
    const av_tensor h1 = av_view(bh1.data(), {B, Hd, n, n});
    const av_tensor h2 = av_view(bh2.data(), {B, Hd, n, n});
    const av_tensor h33 = av_view(bh33.data(), {B, Hd + 1, n, n});
    // h1 = GELU_tanh(Conv3x3(X)); h2 = GELU_tanh(Conv3x3 dilation 2 (h1))
    AV_TRY(av_conv(be, x, w.mask0_w, w.mask0_b, h1, 1, 1, AV_ACT_GELU_TANH));
    AV_TRY(av_conv(be, h1, w.mask2_w, w.mask2_b, h2, 1, 2, AV_ACT_GELU_TANH, av_tensor(), /*dilation=*/2));
    // concat(h2, SG_l)                                                      // [B, 33, n, n]
    for (int64_t b = 0; b < B; ++b) {
        AV_TRY(be.copy(av_at(bh33.data(), b * (Hd + 1) * nn), av_at(bh2.data(), b * Hd * nn),
                       static_cast<size_t>(Hd * nn) * sizeof(float)));
        AV_TRY(be.upload(av_at(bh33.data(), (b * (Hd + 1) + Hd) * nn), sg + b * nn, static_cast<size_t>(nn) * sizeof(float)));
    }
    // m = sigmoid(Conv1x1(concat))                                          // [B, 1, n, n]
    AV_TRY(av_conv(be, h33, w.mask4_w, w.mask4_b, av_view(m_out, {B, 1, n, n}), 1, 0, AV_ACT_SIGMOID));
    return be.synchronize();
}
