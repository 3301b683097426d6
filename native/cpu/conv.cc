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

#include "backend-cpu.h"
#include "gemm.h"

namespace {

std::string shape_str(const av_tensor& t) {
    return "[" + std::to_string(t.ne[3]) + "," + std::to_string(t.ne[2]) + "," + std::to_string(t.ne[1]) + "," +
           std::to_string(t.ne[0]) + "]";
}

bool overlaps(const av_tensor& a, const av_tensor& b) {
    if (!av_tensor_present(a) || !av_tensor_present(b)) return false;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
    return a0 < b0 + av_tensor_nbytes(b) && b0 < a0 + av_tensor_nbytes(a);
}

}  // namespace

av_status av_cpu_conv2d(const av_conv2d_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.w) && av_tensor_present(p.y),
             "conv2d: x, w and y are required");
    AV_CHECK(p.x.dtype == AV_F32 && p.y.dtype == AV_F32, "conv2d: x and y must be f32");
    AV_CHECK(p.w.dtype == AV_F32 || p.w.dtype == AV_F16 || p.w.dtype == AV_BF16,
             "conv2d: w must be f32, f16 or bf16");
    AV_CHECK(av_tensor_is_contiguous(p.x) && av_tensor_is_contiguous(p.w) && av_tensor_is_contiguous(p.y),
             "conv2d: x, w and y must be contiguous");
    AV_CHECK(p.stride >= 1 && p.dilation >= 1, "conv2d: stride and dilation must be >= 1");
    AV_CHECK(p.pad_t >= 0 && p.pad_l >= 0 && p.pad_b >= 0 && p.pad_r >= 0, "conv2d: padding must be >= 0");
    AV_CHECK(p.act >= AV_ACT_NONE && p.act <= AV_ACT_SIGMOID, "conv2d: unknown act " + std::to_string(p.act));
    // ne: x {W, H, Cin, B}, w {kw, kh, Cin, Cout}, y {Wo, Ho, Cout, B}.
    const int64_t W = p.x.ne[0], H = p.x.ne[1], Cin = p.x.ne[2], B = p.x.ne[3];
    const int64_t kw = p.w.ne[0], kh = p.w.ne[1], Cout = p.w.ne[3];
    AV_CHECK(p.w.ne[2] == Cin, "conv2d: w " + shape_str(p.w) + " does not match x " + shape_str(p.x) + " in Cin");
    const int64_t span_h = H + p.pad_t + p.pad_b - static_cast<int64_t>(p.dilation) * (kh - 1) - 1;
    const int64_t span_w = W + p.pad_l + p.pad_r - static_cast<int64_t>(p.dilation) * (kw - 1) - 1;
    AV_CHECK(span_h >= 0 && span_w >= 0, "conv2d: the dilated kernel is larger than the padded input");
    const int64_t Ho = span_h / p.stride + 1, Wo = span_w / p.stride + 1;
    AV_CHECK(p.y.ne[0] == Wo && p.y.ne[1] == Ho && p.y.ne[2] == Cout && p.y.ne[3] == B,
             "conv2d: y " + shape_str(p.y) + " must be [" + std::to_string(B) + "," + std::to_string(Cout) + "," +
                 std::to_string(Ho) + "," + std::to_string(Wo) + "]");
    if (av_tensor_present(p.bias)) {
        AV_CHECK(p.bias.dtype == AV_F32 && av_tensor_is_contiguous(p.bias), "conv2d: bias must be contiguous f32");
        AV_CHECK(p.bias.ne[0] == Cout && av_tensor_nelements(p.bias) == Cout, "conv2d: bias must be [Cout]");
    }
    if (av_tensor_present(p.res)) {
        AV_CHECK(p.res.dtype == AV_F32 && av_tensor_is_contiguous(p.res), "conv2d: res must be contiguous f32");
        AV_CHECK(p.res.ne[0] == Wo && p.res.ne[1] == Ho && p.res.ne[2] == Cout && p.res.ne[3] == B,
                 "conv2d: res " + shape_str(p.res) + " must have the shape of y " + shape_str(p.y));
        AV_CHECK(p.res.data == p.y.data || !overlaps(p.res, p.y), "conv2d: res must be y itself or not overlap it");
    }
    AV_CHECK(!overlaps(p.y, p.x) && !overlaps(p.y, p.w) && !overlaps(p.y, p.bias),
             "conv2d: y must not overlap x, w or bias");

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
