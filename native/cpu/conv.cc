// av_cpu_conv2d: 2-D convolution as a GEMM per image, on the packed GEMM of gemm.cc.
//
//   y_b[Cout, Ho*Wo] = W[Cout, Cin*kh*kw] * im2col(x_b)[Cin*kh*kw, Ho*Wo]  (+ bias, act, res)
//
// The weight is A (rows in PyTorch order [Cout, Cin, kh, kw], f32/f16/bf16, packed once for
// the whole batch); the image is B, read through an implicit im2col by the packer, so the
// Cin*kh*kw x Ho*Wo matrix (1.5 GB for a 160-channel 3x3 conv at 512x512) never exists. Output
// pixels are the GEMM's N, which splits into tasks over the thread pool. A 1x1 stride-1
// unpadded conv is described as one long image row, so its packer reads plain contiguous rows.
#include <string>

#include "../core/ops-check.h"
#include "backend-cpu.h"
#include "gemm.h"

av_status av_cpu_conv2d(const av_conv2d_params& p) {
    AV_TRY(av_check_conv2d(p));
    // ne: x {W, H, Cin, B}, w {kw, kh, Cin, Cout}, y {Wo, Ho, Cout, B}.
    const int64_t W = p.x.ne[0], H = p.x.ne[1], Cin = p.x.ne[2], B = p.x.ne[3];
    const int64_t kw = p.w.ne[0], kh = p.w.ne[1], Cout = p.w.ne[3];
    const int64_t Ho = (H + p.pad_t + p.pad_b - static_cast<int64_t>(p.dilation) * (kh - 1) - 1) / p.stride + 1;
    const int64_t Wo = (W + p.pad_l + p.pad_r - static_cast<int64_t>(p.dilation) * (kw - 1) - 1) / p.stride + 1;

    const int64_t K = Cin * kh * kw, P = Ho * Wo;
    av_gemm_problem g;
    g.batch = B;
    g.M = Cout;
    g.N = P;
    g.K = K;
    g.a.dtype = p.w.dtype;
    g.a.data = p.w.data;
    g.a.ld = K;
    g.b.kind = AV_GEMM_SRC_IM2COL;
    g.b.dtype = AV_F32;
    g.b.data = p.x.data;
    g.b_bstride = Cin * H * W;
    const bool pointwise = kh == 1 && kw == 1 && p.stride == 1 && p.pad_t == 0 && p.pad_l == 0 && p.pad_b == 0 &&
                           p.pad_r == 0;
    if (pointwise) {
        // Pixel n of the output is pixel n of the input: one row of H*W pixels per channel.
        g.b.H = 1;
        g.b.W = H * W;
        g.b.Wo = H * W;
    } else {
        g.b.H = H;
        g.b.W = W;
        g.b.Wo = Wo;
        g.b.kh = static_cast<int32_t>(kh);
        g.b.kw = static_cast<int32_t>(kw);
        g.b.stride = p.stride;
        g.b.dil = p.dilation;
        g.b.pad_t = p.pad_t;
        g.b.pad_l = p.pad_l;
    }
    g.c = static_cast<float*>(p.y.data);
    g.ldc = P;
    g.c_bstride = Cout * P;
    g.epi.bias = av_tensor_present(p.bias) ? static_cast<const float*>(p.bias.data) : nullptr;
    g.epi.bias_per_row = true;
    g.epi.act = p.act;
    if (av_tensor_present(p.res)) {
        g.epi.res = static_cast<const float*>(p.res.data);
        g.epi.res_ld = P;
        g.res_bstride = Cout * P;
    }
    if (!av_gemm_run(g, av_gemm_isa_current()))
        return av_status::error(AV_ERR_OOM, "conv2d: out of memory for packing buffers");
    return av_status::success();
}
