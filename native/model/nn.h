// Thin helpers over core/ops.h for the model code: contiguous f32 views written row-major
// (av_view(p, {B, L, C}) is ne = {C, L, B}) and one call per op with the common arguments.
// Nothing here knows a backend's internals; every call goes through av_backend::compute().
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/backend.h"

// Contiguous view of `data` with a row-major shape (outermost first, at most 4 dims).
inline av_tensor av_view(void* data, std::initializer_list<int64_t> shape, av_dtype dt = AV_F32) {
    int64_t ne[4] = {1, 1, 1, 1};
    int i = static_cast<int>(shape.size()) - 1;
    for (int64_t d : shape) ne[i--] = d;
    return av_tensor_make(data, dt, ne[0], ne[1], ne[2], ne[3]);
}

// Pointer `elems` elements past the start of an f32 (or i32) buffer.
inline void* av_at(void* base, int64_t elems) { return static_cast<float*>(base) + elems; }
inline void* av_at(const av_tensor& t, int64_t elems) {
    return static_cast<uint8_t*>(t.data) + elems * static_cast<int64_t>(av_dtype_size(t.dtype));
}

// Row-major shape view of an existing tensor's data (same dtype).
inline av_tensor av_reshape(const av_tensor& t, std::initializer_list<int64_t> shape) {
    return av_view(t.data, shape, t.dtype);
}

// Rows [r0, r0 + n) of a tensor whose outermost row-major dim is split: the view [n, inner...].
inline av_tensor av_rows(const av_tensor& t, int64_t r0, int64_t n, int64_t row_elems) {
    return av_view(av_at(t, r0 * row_elems), {n, row_elems}, t.dtype);
}

inline const av_tensor av_none() { return av_tensor(); }

// y = res + gate * act(x W^T + bias); x [M, K] (or [batch, M, K]), w [N, K], y [M, N].
inline av_status av_linear(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& bias,
                           const av_tensor& y, int32_t act = AV_ACT_NONE, const av_tensor& gate = av_tensor(),
                           int64_t rows_per_group = 1, const av_tensor& res = av_tensor()) {
    av_linear_params p;
    p.x = x;
    p.w = w;
    p.bias = bias;
    p.y = y;
    p.act = act;
    p.gate = gate;
    p.rows_per_group = rows_per_group;
    p.res = res;
    return av_compute(be, AV_OP_LINEAR, p);
}

// y = res + act(conv(x, w) + bias), symmetric zero padding.
inline av_status av_conv(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& bias,
                         const av_tensor& y, int32_t stride, int32_t pad, int32_t act = AV_ACT_NONE,
                         const av_tensor& res = av_tensor(), int32_t dilation = 1) {
    av_conv2d_params p;
    p.x = x;
    p.w = w;
    p.bias = bias;
    p.y = y;
    p.res = res;
    p.stride = stride;
    p.pad_t = p.pad_l = p.pad_b = p.pad_r = pad;
    p.dilation = dilation;
    p.act = act;
    return av_compute(be, AV_OP_CONV2D, p);
}

// y = (LN(x) * weight + bias) * (1 + scale) + shift over the last axis; scale/shift [G, C]
// row-group broadcast; weight/bias [C] optional (absent: no affine).
inline av_status av_layernorm(av_backend& be, const av_tensor& x, const av_tensor& y, const av_tensor& scale,
                              const av_tensor& shift, int64_t rows_per_group, float eps = 1e-6f,
                              const av_tensor& weight = av_tensor(), const av_tensor& bias = av_tensor()) {
    av_layernorm_params p;
    p.x = x;
    p.weight = weight;
    p.bias = bias;
    p.y = y;
    p.scale = scale;
    p.shift = shift;
    p.rows_per_group = rows_per_group;
    p.eps = eps;
    return av_compute(be, AV_OP_LAYERNORM, p);
}

// GroupNorm of x [B, C, H, W] (viewed as the op's [B, C, H*W]), optional fused SiLU.
inline av_status av_groupnorm(av_backend& be, const av_tensor& x, const av_tensor& w, const av_tensor& b,
                              const av_tensor& y, bool silu, int32_t groups = 32, float eps = 1e-6f) {
    av_groupnorm_params p;
    p.x = av_view(x.data, {x.ne[3], x.ne[2], x.ne[1] * x.ne[0]});
    p.weight = w;
    p.bias = b;
    p.y = av_view(y.data, {y.ne[3], y.ne[2], y.ne[1] * y.ne[0]});
    p.groups = groups;
    p.eps = eps;
    p.silu = silu ? 1 : 0;
    return av_compute(be, AV_OP_GROUPNORM, p);
}

// y = a + alpha * b (kind ADD) or y = a * (beta + alpha * b) (kind MUL), b broadcast (ops.h).
inline av_status av_binary(av_backend& be, const av_tensor& a, const av_tensor& b, const av_tensor& y,
                           int32_t kind, float alpha = 1.0f, float beta = 1.0f, int64_t b_div = 1) {
    av_binary_params p;
    p.a = a;
    p.b = b;
    p.y = y;
    p.kind = kind;
    p.alpha = alpha;
    p.beta = beta;
    p.b_div = b_div;
    return av_compute(be, AV_OP_BINARY, p);
}

inline av_status av_unary(av_backend& be, const av_tensor& x, const av_tensor& y, int32_t act) {
    av_unary_params p;
    p.x = x;
    p.y = y;
    p.act = act;
    return av_compute(be, AV_OP_UNARY, p);
}

inline av_status av_resample(av_backend& be, const av_tensor& x, const av_tensor& y, int32_t mode) {
    av_resample_params p;
    p.x = x;
    p.y = y;
    p.mode = mode;
    return av_compute(be, AV_OP_RESAMPLE, p);
}

// y (contiguous) = x (any strided view with the same ne).
inline av_status av_copy(av_backend& be, const av_tensor& x, const av_tensor& y) {
    av_copy_params p;
    p.x = x;
    p.y = y;
    return av_compute(be, AV_OP_COPY, p);
}

// Strided view of a contiguous f32 [B, C, S] buffer as [B, S, C] (ne = {C, S, B}): the source
// of a channel-major -> token-major permute.
inline av_tensor av_transposed_cs(void* data, int64_t B, int64_t C, int64_t S, int64_t batch_stride_elems) {
    av_tensor t = av_tensor_make(data, AV_F32, C, S, B, 1);
    t.nb[0] = static_cast<int64_t>(sizeof(float)) * S;
    t.nb[1] = sizeof(float);
    t.nb[2] = static_cast<int64_t>(sizeof(float)) * batch_stride_elems;
    t.nb[3] = t.nb[2] * B;
    return t;
}
