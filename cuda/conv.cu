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
#include "gemm-tile.cuh"

namespace {

// The CPU backend's shape format, "[d3,d2,d1,d0]", so messages match it word for word.
std::string shape_c(const av_tensor& t) {
    return "[" + std::to_string(t.ne[3]) + "," + std::to_string(t.ne[2]) + "," + std::to_string(t.ne[1]) + "," +
           std::to_string(t.ne[0]) + "]";
}

bool opt_overlaps(const av_tensor& a, const av_tensor& b) {
    return av_tensor_present(a) && av_tensor_present(b) && av_overlaps(a, b);
}

}  // namespace

av_status av_cuda_conv2d(const av_conv2d_params& p, const av_cuda_ctx& ctx) {
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
    AV_CHECK(p.w.ne[2] == Cin, "conv2d: w " + shape_c(p.w) + " does not match x " + shape_c(p.x) + " in Cin");
    const int64_t span_h = H + p.pad_t + p.pad_b - static_cast<int64_t>(p.dilation) * (kh - 1) - 1;
    const int64_t span_w = W + p.pad_l + p.pad_r - static_cast<int64_t>(p.dilation) * (kw - 1) - 1;
    AV_CHECK(span_h >= 0 && span_w >= 0, "conv2d: the dilated kernel is larger than the padded input");
    const int64_t Ho = span_h / p.stride + 1, Wo = span_w / p.stride + 1;
    AV_CHECK(p.y.ne[0] == Wo && p.y.ne[1] == Ho && p.y.ne[2] == Cout && p.y.ne[3] == B,
             "conv2d: y " + shape_c(p.y) + " must be [" + std::to_string(B) + "," + std::to_string(Cout) + "," +
                 std::to_string(Ho) + "," + std::to_string(Wo) + "]");
    if (av_tensor_present(p.bias)) {
        AV_CHECK(p.bias.dtype == AV_F32 && av_tensor_is_contiguous(p.bias), "conv2d: bias must be contiguous f32");
        AV_CHECK(p.bias.ne[0] == Cout && av_tensor_nelements(p.bias) == Cout, "conv2d: bias must be [Cout]");
    }
    if (av_tensor_present(p.res)) {
        AV_CHECK(p.res.dtype == AV_F32 && av_tensor_is_contiguous(p.res), "conv2d: res must be contiguous f32");
        AV_CHECK(p.res.ne[0] == Wo && p.res.ne[1] == Ho && p.res.ne[2] == Cout && p.res.ne[3] == B,
                 "conv2d: res " + shape_c(p.res) + " must have the shape of y " + shape_c(p.y));
        AV_CHECK(p.res.data == p.y.data || !opt_overlaps(p.res, p.y), "conv2d: res must be y itself or not overlap it");
    }
    AV_CHECK(!opt_overlaps(p.y, p.x) && !opt_overlaps(p.y, p.w) && !opt_overlaps(p.y, p.bias),
             "conv2d: y must not overlap x, w or bias");
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
