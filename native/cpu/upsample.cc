// Resampling (spec 2.1, 5.5) and the VQ residual accumulation of one scale (spec 5.4).
//
// Algorithm: every mode is separable. Each axis gets a tap table (source indices and weights
// per output index) from core/resample-weights.h, the same functions the CUDA kernels use; a
// horizontal pass resamples the rows of every plane into a scratch buffer [P, H, Wo], a
// vertical pass combines those rows into [P, Ho, Wo]. For PyTorch bicubic this is its fp32
// evaluation order (interpolate along x for the 4 source rows, then along y, sums left to
// right), so the CPU result equals an fp32 emulation of PyTorch's CPU kernel bit for bit (see
// test/parity/resample.test.ts). Area (PyTorch sums the 2-D window, then divides) and Pillow
// (which accumulates in double) agree to fp32 rounding; Pillow 12's mode-F resize was matched
// to 2.4e-7 on [-1, 1] data during development.
//
// Threads: each pass splits its output rows over av_cpu_parallel_for. upsample_accum is tiny
// (B x 32 x 32 x 32): it runs bicubic_up, Phi's 3x3 conv + mix + accumulate (one task per
// output channel plane) and the area downsample as separate parallel passes.
#include <algorithm>
#include <new>
#include <string>
#include <vector>

#include "../core/ops-check.h"
#include "../core/resample-weights.h"
#include "backend-cpu.h"

namespace {

// Taps of one axis: output o reads n[o] taps (idx[o*K + k], w[o*K + k]), k < n[o].
struct axis_taps {
    int64_t K = 0;
    std::vector<int32_t> n;
    std::vector<int64_t> idx;
    std::vector<float> w;
};

void build_taps(int32_t mode, int64_t in, int64_t out, axis_taps* t) {
    switch (mode) {
        case AV_RESAMPLE_BICUBIC:
            t->K = 4;
            break;
        case AV_RESAMPLE_AREA:
            t->K = av_area_max_taps(in, out);
            break;
        case AV_RESAMPLE_NEAREST:
            t->K = 1;
            break;
        case AV_RESAMPLE_PIL_BICUBIC:
            t->K = av_pil_max_taps(in, out);
            break;
    }
    t->n.assign(out, 0);
    t->idx.assign(out * t->K, 0);
    t->w.assign(out * t->K, 0.0f);
    for (int64_t o = 0; o < out; ++o) {
        int64_t* idx = &t->idx[o * t->K];
        float* w = &t->w[o * t->K];
        if (in == out) {
            // Same size is a copy in every mode (PyTorch and Pillow skip the pass; the bicubic
            // and Pillow weights would be exactly 0, 1, 0, 0 anyway).
            idx[0] = o;
            w[0] = 1.0f;
            t->n[o] = 1;
            continue;
        }
        switch (mode) {
            case AV_RESAMPLE_BICUBIC:
                av_bicubic_taps(o, in, out, idx, w);
                t->n[o] = 4;
                break;
            case AV_RESAMPLE_AREA: {
                int64_t b, e;
                av_area_window(o, in, out, &b, &e);
                for (int64_t j = b; j < e; ++j) {
                    idx[j - b] = j;
                    w[j - b] = 1.0f / static_cast<float>(e - b);
                }
                t->n[o] = static_cast<int32_t>(e - b);
                break;
            }
            case AV_RESAMPLE_NEAREST:
                idx[0] = av_nearest_index(o, in, out);
                w[0] = 1.0f;
                t->n[o] = 1;
                break;
            case AV_RESAMPLE_PIL_BICUBIC: {
                int64_t b;
                int64_t n = av_pil_bicubic_taps(o, in, out, &b, w);
                for (int64_t k = 0; k < n; ++k) idx[k] = b + k;
                t->n[o] = static_cast<int32_t>(n);
                break;
            }
        }
    }
}

// Horizontal pass: rows [rows, W] -> [rows, Wo].
void resample_rows(const float* x, float* y, int64_t rows, int64_t W, int64_t Wo, const axis_taps& tx) {
    av_cpu_parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Wo)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const float* xr = x + r * W;
            float* yr = y + r * Wo;
            for (int64_t o = 0; o < Wo; ++o) {
                const int64_t* idx = &tx.idx[o * tx.K];
                const float* w = &tx.w[o * tx.K];
                float acc = xr[idx[0]] * w[0];
                for (int32_t k = 1; k < tx.n[o]; ++k) acc += xr[idx[k]] * w[k];
                yr[o] = acc;
            }
        }
    });
}

// Vertical pass: planes [P, H, Wo] -> [P, Ho, Wo]; every output row is a weighted sum of rows.
void resample_cols(const float* x, float* y, int64_t P, int64_t H, int64_t Ho, int64_t Wo, const axis_taps& ty) {
    av_cpu_parallel_for(P * Ho, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Wo)), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t p = r / Ho, o = r % Ho;
            const int64_t* idx = &ty.idx[o * ty.K];
            const float* w = &ty.w[o * ty.K];
            float* yr = y + r * Wo;
            const float* x0 = x + (p * H + idx[0]) * Wo;
            for (int64_t c = 0; c < Wo; ++c) yr[c] = x0[c] * w[0];
            for (int32_t k = 1; k < ty.n[o]; ++k) {
                const float* xk = x + (p * H + idx[k]) * Wo;
                const float wk = w[k];
                for (int64_t c = 0; c < Wo; ++c) yr[c] += xk[c] * wk;
            }
        }
    });
}

// x [P, H, W] -> y [P, Ho, Wo] with `mode`, horizontal pass first. tmp holds P*H*Wo floats.
void resample_planes(int32_t mode, const float* x, float* y, float* tmp, int64_t P, int64_t H, int64_t W, int64_t Ho,
                     int64_t Wo) {
    axis_taps tx, ty;
    build_taps(mode, W, Wo, &tx);
    build_taps(mode, H, Ho, &ty);
    resample_rows(x, tmp, P * H, W, Wo, tx);
    resample_cols(tmp, y, P, H, Ho, Wo, ty);
}

av_status resample_impl(const av_resample_params& p) {
    AV_TRY(av_check_resample(p));
    const int64_t P = p.x.ne[2] * p.x.ne[3];
    const int64_t H = p.x.ne[1], W = p.x.ne[0], Ho = p.y.ne[1], Wo = p.y.ne[0];
    std::vector<float> tmp(static_cast<size_t>(P * H * Wo));
    resample_planes(p.mode, static_cast<const float*>(p.x.data), static_cast<float*>(p.y.data), tmp.data(), P, H, W, Ho,
                    Wo);
    return av_status::success();
}

av_status upsample_accum_impl(const av_upsample_accum_params& p) {
    AV_TRY(av_check_upsample_accum(p));
    // h [B, Cv, ph, pw]; f_hat [B, Cv, Gh, Gw]
    const int64_t B = p.f_hat.ne[3], Cv = p.f_hat.ne[2], Gh = p.f_hat.ne[1], Gw = p.f_hat.ne[0];
    const int64_t ph = p.h.ne[1], pw = p.h.ne[0];
    const bool has_phi = av_tensor_present(p.phi_w);
    const bool has_bias = av_tensor_present(p.phi_b);
    const bool has_next = av_tensor_present(p.next);
    const int64_t pn = p.pn_next;

    const int64_t P = B * Cv, S = Gh * Gw;
    const float* h = static_cast<const float*>(p.h.data);
    float* f_hat = static_cast<float*>(p.f_hat.data);

    // t = bicubic_up(h, Gh x Gw)   [B, Cv, Gh, Gw]
    std::vector<float> t(static_cast<size_t>(P * S));
    std::vector<float> tmp(static_cast<size_t>(P * std::max(ph * Gw, Gh * pn)));
    resample_planes(AV_RESAMPLE_BICUBIC, h, t.data(), tmp.data(), P, ph, pw, Gh, Gw);

    if (!has_phi) {
        av_cpu_parallel_for(P, 1, [&](int64_t q0, int64_t q1) {
            for (int64_t i = q0 * S; i < q1 * S; ++i) f_hat[i] += t[i];
        });
    } else {
        // Phi(t) = (1 - r) t + r (conv3x3(t, phi_w, pad 1) + phi_b); weights widened to f32 once.
        std::vector<float> w(static_cast<size_t>(Cv * Cv * 9));
        for (int64_t i = 0; i < Cv * Cv * 9; ++i) w[i] = av_cpu_load(p.phi_w.data, p.phi_w.dtype, i);
        const float* bias = has_bias ? static_cast<const float*>(p.phi_b.data) : nullptr;
        const float r = p.phi_ratio, keep = 1.0f - p.phi_ratio;
        std::vector<float> acc_all(static_cast<size_t>(P * S));
        av_cpu_parallel_for(P, 1, [&](int64_t q0, int64_t q1) {
            for (int64_t q = q0; q < q1; ++q) {
                const int64_t b = q / Cv, co = q % Cv;
                float* acc = &acc_all[q * S];
                const float bv = bias ? bias[co] : 0.0f;
                for (int64_t i = 0; i < S; ++i) acc[i] = 0.0f;
                for (int64_t ci = 0; ci < Cv; ++ci) {
                    const float* src = &t[(b * Cv + ci) * S];
                    const float* wk = &w[(co * Cv + ci) * 9];
                    for (int ky = 0; ky < 3; ++ky) {
                        for (int kx = 0; kx < 3; ++kx) {
                            const float wv = wk[ky * 3 + kx];
                            // Output (y, x) reads src (y + ky - 1, x + kx - 1); zero padding is
                            // the skipped out-of-range rows and columns.
                            const int64_t y0 = std::max<int64_t>(0, 1 - ky), y1 = std::min<int64_t>(Gh, Gh + 1 - ky);
                            const int64_t x0 = std::max<int64_t>(0, 1 - kx), x1 = std::min<int64_t>(Gw, Gw + 1 - kx);
                            for (int64_t y = y0; y < y1; ++y) {
                                const float* sr = src + (y + ky - 1) * Gw;
                                float* ar = acc + y * Gw;
                                for (int64_t x = x0; x < x1; ++x) ar[x] += wv * sr[x + kx - 1];
                            }
                        }
                    }
                }
                const float* tq = &t[q * S];
                float* fq = f_hat + q * S;
                for (int64_t i = 0; i < S; ++i) fq[i] += tq[i] * keep + (acc[i] + bv) * r;
            }
        });
    }

    if (has_next) {
        // next = area_down(f_hat, pn x pn), then [B, Cv, pn*pn] -> token-major [B, pn*pn, Cv].
        const int64_t L = pn * pn;
        std::vector<float> down(static_cast<size_t>(P * L));
        resample_planes(AV_RESAMPLE_AREA, f_hat, down.data(), tmp.data(), P, Gh, Gw, pn, pn);
        float* next = static_cast<float*>(p.next.data);
        av_cpu_parallel_for(B * L, 64, [&](int64_t r0, int64_t r1) {
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t b = r / L, l = r % L;
                for (int64_t c = 0; c < Cv; ++c) next[r * Cv + c] = down[(b * Cv + c) * L + l];
            }
        });
    }
    return av_status::success();
}

}  // namespace

av_status av_cpu_resample(const av_resample_params& p) {
    try {
        return resample_impl(p);
    } catch (const std::bad_alloc&) {
        return av_status::error(AV_ERR_OOM, "resample: out of host memory for scratch buffers");
    }
}

av_status av_cpu_upsample_accum(const av_upsample_accum_params& p) {
    try {
        return upsample_accum_impl(p);
    } catch (const std::bad_alloc&) {
        return av_status::error(AV_ERR_OOM, "upsample_accum: out of host memory for scratch buffers");
    }
}
