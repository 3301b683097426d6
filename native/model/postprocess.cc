// Reference: training/avtrain/postprocess.py (to_uint8, adain_fix, wavelet_fix), spec 2.2: clamp,
// (x+1)/2, floor(255 x + 0.5) in fp32; AdaIN with the unbiased variance + 1e-5, or the wavelet
// fix; then truncation as torchvision's ToPILImage.
#include "postprocess.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// Mean and sqrt(unbiased variance + 1e-5) of n values, in float64, rounded to fp32.
void mean_std(const float* x, int64_t n, float* mean, float* sd) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += x[i];
    const double m = s / static_cast<double>(n);
    double v = 0.0;
    for (int64_t i = 0; i < n; ++i) v += (x[i] - m) * (x[i] - m);
    v = n > 1 ? v / static_cast<double>(n - 1) : 0.0;
    *mean = static_cast<float>(m);
    *sd = std::sqrt(static_cast<float>(v) + 1e-5f);
}

// One level of the wavelet decomposition (spec 2.2.4) on an S x S plane: out = depthwise 3x3
// [[1,2,1],[2,4,2],[1,2,1]]/16 with dilation r and replicate padding (indices clamped), the nine
// taps summed in float64 row by row and rounded to fp32.
void wavelet_blur(const float* in, int64_t S, int64_t r, float* out) {
    static const double w[3] = {1.0, 2.0, 1.0};
    auto clampi = [S](int64_t i) { return std::min(S - 1, std::max<int64_t>(0, i)); };
    for (int64_t y = 0; y < S; ++y) {
        const int64_t ys[3] = {clampi(y - r), y, clampi(y + r)};
        for (int64_t x = 0; x < S; ++x) {
            const int64_t xs[3] = {clampi(x - r), x, clampi(x + r)};
            double acc = 0.0;
            for (int dy = 0; dy < 3; ++dy)
                for (int dx = 0; dx < 3; ++dx) acc += w[dy] * w[dx] / 16.0 * in[ys[dy] * S + xs[dx]];
            out[y * S + x] = static_cast<float>(acc);
        }
    }
}

// Splits a plane into its high bands (summed) and its lowest band, 5 levels, r = 1, 2, 4, 8, 16.
void wavelet_split(const float* img, int64_t S, std::vector<float>* high, std::vector<float>* low) {
    const size_t N = static_cast<size_t>(S * S);
    std::vector<float> cur(img, img + N), nxt(N);
    high->assign(N, 0.0f);
    for (int64_t r = 1; r <= 16; r *= 2) {
        wavelet_blur(cur.data(), S, r, nxt.data());
        for (size_t i = 0; i < N; ++i) (*high)[i] += cur[i] - nxt[i];
        cur.swap(nxt);
    }
    *low = std::move(cur);
}

}  // namespace

void av_postprocess(const float* dec, const float* src, int64_t S, uint8_t* rgb, bool wavelet) {
    const int64_t N = S * S;
    std::vector<float> x(static_cast<size_t>(3 * N));
    for (int64_t i = 0; i < 3 * N; ++i) {
        const float c = std::min(1.0f, std::max(-1.0f, dec[i]));
        const float v01 = (c + 1.0f) / 2.0f;
        const float v255 = v01 * 255.0f;
        x[i] = std::floor(v255 + 0.5f);  // round half up, in [0, 255]
    }
    if (src == nullptr) {
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t i = 0; i < N; ++i) rgb[i * 3 + c] = static_cast<uint8_t>(x[c * N + i]);
        return;
    }
    if (wavelet) {
        std::vector<float> hx, lx, hs, ls;
        for (int64_t c = 0; c < 3; ++c) {
            float* xc = x.data() + c * N;
            for (int64_t i = 0; i < N; ++i) xc[i] = xc[i] / 255.0f;
            wavelet_split(xc, S, &hx, &lx);
            wavelet_split(src + c * N, S, &hs, &ls);
            for (int64_t i = 0; i < N; ++i) {
                const float y = std::min(1.0f, std::max(0.0f, hx[i] + ls[i]));
                rgb[i * 3 + c] = static_cast<uint8_t>(y * 255.0f);  // truncation, as ToPILImage
            }
        }
        return;
    }
    for (int64_t c = 0; c < 3; ++c) {
        float* xc = x.data() + c * N;
        for (int64_t i = 0; i < N; ++i) xc[i] = xc[i] / 255.0f;
        float mx, sx, ms, ss;
        mean_std(xc, N, &mx, &sx);
        mean_std(src + c * N, N, &ms, &ss);
        for (int64_t i = 0; i < N; ++i) {
            float y = (xc[i] - mx) / sx * ss + ms;
            y = std::min(1.0f, std::max(0.0f, y));
            rgb[i * 3 + c] = static_cast<uint8_t>(y * 255.0f);  // truncation, as ToPILImage
        }
    }
}
