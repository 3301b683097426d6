// av_conv2d: y = res + act(conv(x, w) + bias), NCHW, zero padding, stride, dilation.
//
// Algorithm: implicit GEMM (no im2col buffer). Per image z, out(r, n) = sum_k X(r, k) W(n, k)
// with r = oy*Wo + ox (output pixel), n = output channel, k = (ci*kh + ky)*kw + kx, so the
// weight tensor [Cout, Cin, kh, kw] is already the dense [N, K] operand and X is gathered from
// the input image by x_im2col (gemm-tile.cuh) while the tile is staged into shared memory,
// zero outside the padded image. The output is written channel-major, y[z][n][r]
// (ys_r = 1, ys_n = Ho*Wo), which is NCHW. 16-bit weights use the tensor-core kernel (x is
// rounded to the weights' type), f32 weights the exact SIMT kernel.
// Grid: (ceil(Cout / BN), ceil(Ho*Wo / BM), B), see gemm-tile.cuh.
//
// Cost at the decoder's largest layers (160 -> 160, 512 x 512): K = 1440, M = 262144, N = 160:
// 121 GFLOP per conv; X is re-read (from L1/L2) once per k-tile column of each block.
//
// Reference: native/cpu/conv.cc; PyTorch F.conv2d.
#include "conv.cuh"
#include "core/ops-check.h"
#include "gemm-tile.cuh"

av_status av_cuda_conv2d(const av_conv2d_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_conv2d(p));
    // ne: x {W, H, Cin, B}, w {kw, kh, Cin, Cout}, y {Wo, Ho, Cout, B}.
    const int64_t W = p.x.ne[0], H = p.x.ne[1], Cin = p.x.ne[2], B = p.x.ne[3];
    const int64_t kw = p.w.ne[0], kh = p.w.ne[1], Cout = p.w.ne[3];
    const int64_t Ho = (H + p.pad_t + p.pad_b - static_cast<int64_t>(p.dilation) * (kh - 1) - 1) / p.stride + 1;
    const int64_t Wo = (W + p.pad_l + p.pad_r - static_cast<int64_t>(p.dilation) * (kw - 1) - 1) / p.stride + 1;
    AV_CHECK(H < (1LL << 31) / 2 && W < (1LL << 31) / 2 && Cin * kh * kw < (1LL << 31), "conv2d: input too large");

    av_gemm::gemm_epi ep;
    ep.y = static_cast<float*>(p.y.data);
    ep.M = Ho * Wo;
    ep.N = Cout;
    ep.y_bs = Cout * Ho * Wo;
    ep.ys_r = 1;
    ep.ys_n = Ho * Wo;
    ep.act = p.act;
    ep.pair_ok = false;
    if (av_tensor_present(p.bias)) ep.bias = static_cast<const float*>(p.bias.data);
    if (av_tensor_present(p.res)) ep.res = static_cast<const float*>(p.res.data);
    if (B == 0) return av_status::success();

    av_gemm::x_im2col X;
    X.x = static_cast<const float*>(p.x.data);
    X.bs = Cin * H * W;
    X.Cin = static_cast<int>(Cin);
    X.H = static_cast<int>(H);
    X.W = static_cast<int>(W);
    X.Ho = static_cast<int>(Ho);
    X.Wo = static_cast<int>(Wo);
    X.kh = static_cast<int>(kh);
    X.kw = static_cast<int>(kw);
    X.stride = p.stride;
    X.pad_t = p.pad_t;
    X.pad_l = p.pad_l;
    X.dil = p.dilation;
    X.M = Ho * Wo;
    X.K = Cin * kh * kw;
    return av_gemm::gemm_launch(X, p.w.data, p.w.dtype, 0, X.K, static_cast<int>(B), ep, ctx, "conv2d");
}
