// Reference: training/avtrain/postprocess.py (to_uint8, adain_fix), spec 2.2: clamp, (x+1)/2,
// floor(255 x + 0.5) in fp32; AdaIN with the unbiased variance + 1e-5, then truncation as
// torchvision's ToPILImage.
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

}  // namespace

void av_postprocess(const float* dec, const float* src, int64_t S, uint8_t* rgb) {
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
