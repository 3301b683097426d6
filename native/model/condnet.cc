// Reference: training/avtrain/model.py ConEmbedding.forward.
#include "condnet.h"

#include <algorithm>

#include "nn.h"

int64_t av_condnet_max_act(const av_condnet_w& w, int64_t B, int64_t S) {
    int64_t best = 0, s = S;
    for (const auto& l : w.layers) {
        s = (s - 1) / l.stride + 1;  // k3, p1: floor((s + 2 - 3) / stride) + 1
        best = std::max(best, B * l.cout * s * s);
    }
    return best;
}

av_status av_condnet_forward(av_backend& be, const av_condnet_w& w, const av_tensor& x, int64_t B, int64_t S, void* a,
                             void* b, const av_tensor& y) {
    av_tensor cur = x;
    int64_t s = S;
    void* bufs[2] = {a, b};
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const auto& l = w.layers[i];
        s = (s - 1) / l.stride + 1;
        // The last layer writes the caller's output; the others ping-pong.       // [B, cout, s, s]
        const av_tensor out = i + 1 == w.layers.size() ? y : av_view(bufs[i % 2], {B, l.cout, s, s});
        AV_TRY(av_conv(be, cur, l.w, l.b, out, l.stride, 1, l.act));
        cur = out;
    }
    return av_status::success();
}
