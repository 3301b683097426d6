// Backend-independent invariant checks of the ops in core/ops.h (STYLE rule 6: C++ checks
// invariants only and returns av_status). Both backends call these before anything
// backend-specific, so an op rejects the same inputs with the same message everywhere;
// backend-only limits (CUDA grid and shared-memory sizes, ...) stay in the backend.
// Overlap checks compare address ranges only, so they work on host and device pointers alike.
#include "ops-check.h"

#include <cstdint>
#include <string>

namespace {

bool is_weight_dtype(av_dtype t) { return t == AV_F32 || t == AV_F16 || t == AV_BF16; }

// "[d3,d2,d1,d0]" (linear and conv2d messages).
std::string shape_str(const av_tensor& t) {
    return "[" + std::to_string(t.ne[3]) + "," + std::to_string(t.ne[2]) + "," + std::to_string(t.ne[1]) + "," +
           std::to_string(t.ne[0]) + "]";
}

// "[d3, d2, d1, d0]" (vq_* messages).
std::string shape_str_sp(const av_tensor& t) {
    return "[" + std::to_string(t.ne[3]) + ", " + std::to_string(t.ne[2]) + ", " + std::to_string(t.ne[1]) + ", " +
           std::to_string(t.ne[0]) + "]";
}

// Whether the byte ranges [a, a + na) and [b, b + nb) intersect.
bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
    const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + nb && pb < pa + na;
}

// Whether two present tensors share any byte; an absent tensor overlaps nothing.
bool overlaps(const av_tensor& a, const av_tensor& b) {
    if (!av_tensor_present(a) || !av_tensor_present(b)) return false;
    return overlaps(a.data, av_tensor_nbytes(a), b.data, av_tensor_nbytes(b));
}

// y may be x itself (in place) or disjoint from it; a partial overlap would read values that
// were already overwritten.
bool alias_ok(const av_tensor& y, const av_tensor& x) {
    return y.data == x.data || !overlaps(y.data, av_tensor_nbytes(y), x.data, av_tensor_nbytes(x));
}

// A present (non-null), non-empty, contiguous tensor of dtype dt. An absent operand has
// data == nullptr and would otherwise pass as a contiguous 1x1x1x1 view.
bool is_contig(const av_tensor& t, av_dtype dt) {
    if (t.data == nullptr || t.dtype != dt) return false;
    for (int i = 0; i < 4; ++i)
        if (t.ne[i] < 1) return false;
    return av_tensor_is_contiguous(t);
}

bool is_f32c(const av_tensor& t) { return is_contig(t, AV_F32); }
bool is_i32c(const av_tensor& t) { return is_contig(t, AV_I32); }
// A KV cache pair: both f32 or both bf16, contiguous (ops.h, qkv_prep and attn).
bool is_kv_pair(const av_tensor& k, const av_tensor& v) {
    return k.dtype == v.dtype && (k.dtype == AV_F32 || k.dtype == AV_BF16) && is_contig(k, k.dtype) &&
           is_contig(v, v.dtype);
}

// Contiguous f32, possibly empty (presence is checked separately).
bool is_f32_contiguous(const av_tensor& t) { return t.dtype == AV_F32 && av_tensor_is_contiguous(t); }

bool is_float_dtype(av_dtype t) { return t == AV_F32 || t == AV_F16 || t == AV_BF16; }

bool same_ne(const av_tensor& a, const av_tensor& b) {
    return a.ne[0] == b.ne[0] && a.ne[1] == b.ne[1] && a.ne[2] == b.ne[2] && a.ne[3] == b.ne[3];
}

// Row-major [d3, d2, d1, d0] check.
bool shape_is(const av_tensor& t, int64_t d3, int64_t d2, int64_t d1, int64_t d0) {
    return t.ne[0] == d0 && t.ne[1] == d1 && t.ne[2] == d2 && t.ne[3] == d3;
}

// An optional per-channel vector: absent, or contiguous f32 with exactly C elements.
bool vec_ok(const av_tensor& t, int64_t C) {
    return !av_tensor_present(t) || (is_f32c(t) && t.ne[0] == C && av_tensor_nelements(t) == C);
}

// "[a, b, c, d]" (attention messages).
std::string shape4(int64_t a, int64_t b, int64_t c, int64_t d) {
    return "[" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + ", " + std::to_string(d) +
           "]";
}

// Extent in bytes [lo, hi) of a strided view relative to its data pointer (strides may be
// zero or negative).
void view_extent(const av_tensor& t, int64_t* lo, int64_t* hi) {
    int64_t l = 0, h = 0;
    for (int i = 0; i < 4; ++i) {
        const int64_t span = (t.ne[i] - 1) * t.nb[i];
        if (span < 0) l += span;
        else h += span;
    }
    *lo = l;
    *hi = h + static_cast<int64_t>(av_dtype_size(t.dtype));
}

av_status check_idx_codebook(const char* op, const av_tensor& idx, const av_tensor& codebook) {
    AV_CHECK(av_tensor_present(idx) && av_tensor_present(codebook),
             std::string(op) + ": idx and codebook are required");
    AV_CHECK(idx.dtype == AV_I32 && av_tensor_is_contiguous(idx), std::string(op) + ": idx must be contiguous i32");
    AV_CHECK(idx.ne[2] == 1 && idx.ne[3] == 1, std::string(op) + ": idx " + shape_str_sp(idx) + " must be [B, T]");
    AV_CHECK(is_weight_dtype(codebook.dtype) && av_tensor_is_contiguous(codebook),
             std::string(op) + ": codebook must be contiguous f32, f16 or bf16");
    AV_CHECK(codebook.ne[2] == 1 && codebook.ne[3] == 1,
             std::string(op) + ": codebook " + shape_str_sp(codebook) + " must be [V, Cv]");
    return av_status::success();
}

}  // namespace

av_status av_check_linear(const av_linear_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.w) && av_tensor_present(p.y),
             "linear: x, w and y are required");
    AV_CHECK(p.x.dtype == AV_F32 && p.y.dtype == AV_F32, "linear: x and y must be f32");
    AV_CHECK(is_weight_dtype(p.w.dtype), "linear: w must be f32, f16 or bf16");
    AV_CHECK(av_tensor_is_contiguous(p.x) && av_tensor_is_contiguous(p.w) && av_tensor_is_contiguous(p.y),
             "linear: x, w and y must be contiguous");
    const int64_t K = p.x.ne[0], M = p.x.ne[1];
    const int64_t N = p.w.ne[1], batch_w = p.w.ne[2] * p.w.ne[3];
    AV_CHECK(p.w.ne[0] == K, "linear: w " + shape_str(p.w) + " does not match x " + shape_str(p.x) + " in K");
    AV_CHECK(batch_w == 1 || (p.w.ne[2] == p.x.ne[2] && p.w.ne[3] == p.x.ne[3]),
             "linear: w batch must be 1 or equal to x batch (w " + shape_str(p.w) + ", x " + shape_str(p.x) + ")");
    AV_CHECK(p.y.ne[0] == N && p.y.ne[1] == M && p.y.ne[2] == p.x.ne[2] && p.y.ne[3] == p.x.ne[3],
             "linear: y " + shape_str(p.y) + " must be [batch, M, N] for x " + shape_str(p.x) + ", w " +
                 shape_str(p.w));
    AV_CHECK(p.act >= AV_ACT_NONE && p.act <= AV_ACT_SIGMOID, "linear: unknown act " + std::to_string(p.act));
    if (av_tensor_present(p.bias)) {
        AV_CHECK(p.bias.dtype == AV_F32 && av_tensor_is_contiguous(p.bias), "linear: bias must be contiguous f32");
        AV_CHECK(p.bias.ne[0] == N && av_tensor_nelements(p.bias) == N, "linear: bias must be [N]");
    }
    if (av_tensor_present(p.gate)) {
        AV_CHECK(p.gate.dtype == AV_F32 && av_tensor_is_contiguous(p.gate), "linear: gate must be contiguous f32");
        AV_CHECK(p.rows_per_group >= 1, "linear: rows_per_group must be >= 1");
        AV_CHECK(p.gate.ne[0] == N && p.gate.ne[2] == 1 && p.gate.ne[3] == 1, "linear: gate must be [G, N]");
        AV_CHECK(p.gate.ne[1] >= (M + p.rows_per_group - 1) / p.rows_per_group,
                 "linear: gate has " + std::to_string(p.gate.ne[1]) + " rows, M=" + std::to_string(M) +
                     " with rows_per_group=" + std::to_string(p.rows_per_group) + " needs more");
    }
    if (av_tensor_present(p.res)) {
        AV_CHECK(p.res.dtype == AV_F32 && av_tensor_is_contiguous(p.res), "linear: res must be contiguous f32");
        AV_CHECK(p.res.ne[0] == p.y.ne[0] && p.res.ne[1] == p.y.ne[1] && p.res.ne[2] == p.y.ne[2] &&
                     p.res.ne[3] == p.y.ne[3],
                 "linear: res " + shape_str(p.res) + " must have the shape of y " + shape_str(p.y));
        AV_CHECK(p.res.data == p.y.data || !overlaps(p.res, p.y), "linear: res must be y itself or not overlap it");
    }
    AV_CHECK(!overlaps(p.y, p.x) && !overlaps(p.y, p.w) && !overlaps(p.y, p.bias) && !overlaps(p.y, p.gate),
             "linear: y must not overlap x, w, bias or gate");
    return av_status::success();
}

av_status av_check_conv2d(const av_conv2d_params& p) {
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
    return av_status::success();
}

av_status av_check_vq_lookup(const av_vq_lookup_params& p) {
    AV_TRY(check_idx_codebook("vq_lookup", p.idx, p.codebook));
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0];
    AV_CHECK(av_tensor_present(p.y) && p.y.dtype == AV_F32 && av_tensor_is_contiguous(p.y),
             "vq_lookup: y must be contiguous f32");
    const bool cm = p.channel_major != 0;
    const bool y_ok = cm ? (p.y.ne[0] == T && p.y.ne[1] == Cv && p.y.ne[2] == B && p.y.ne[3] == 1)
                         : (p.y.ne[0] == Cv && p.y.ne[1] == T && p.y.ne[2] == B && p.y.ne[3] == 1);
    AV_CHECK(y_ok,
             "vq_lookup: y " + shape_str_sp(p.y) + " must be " +
                 (cm ? "[B, Cv, T] = [" + std::to_string(B) + ", " + std::to_string(Cv) + ", " + std::to_string(T)
                     : "[B, T, Cv] = [" + std::to_string(B) + ", " + std::to_string(T) + ", " + std::to_string(Cv)) +
                 "]");
    return av_status::success();
}

av_status av_check_vq_nearest(const av_vq_nearest_params& p) {
    AV_TRY(check_idx_codebook("vq_nearest", p.idx, p.codebook));
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0], V = p.codebook.ne[1];
    AV_CHECK(av_tensor_present(p.z) && p.z.dtype == AV_F32 && av_tensor_is_contiguous(p.z),
             "vq_nearest: z must be contiguous f32");
    const bool cm = p.channel_major != 0;
    const bool z_ok = cm ? (p.z.ne[0] == T && p.z.ne[1] == Cv && p.z.ne[2] == B && p.z.ne[3] == 1)
                         : (p.z.ne[0] == Cv && p.z.ne[1] == T && p.z.ne[2] == B && p.z.ne[3] == 1);
    AV_CHECK(z_ok, "vq_nearest: z " + shape_str_sp(p.z) + " does not match idx [B, T] = [" + std::to_string(B) + ", " +
                       std::to_string(T) + "] and codebook Cv = " + std::to_string(Cv) +
                       (cm ? " as [B, Cv, T]" : " as [B, T, Cv]"));
    AV_CHECK(V <= INT32_MAX, "vq_nearest: codebook too large for i32 indices");
    return av_status::success();
}

av_status av_check_layernorm(const av_layernorm_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "layernorm: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "layernorm: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "layernorm: y must be x itself or not overlap it");
    AV_CHECK(p.eps >= 0.0f, "layernorm: eps must be >= 0");
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    AV_CHECK(vec_ok(p.weight, C) && vec_ok(p.bias, C),
             "layernorm: weight and bias must be contiguous f32 [" + std::to_string(C) + "] when present");
    const bool mod = av_tensor_present(p.scale) || av_tensor_present(p.shift);
    if (mod) {
        AV_CHECK(av_tensor_present(p.scale) && av_tensor_present(p.shift),
                 "layernorm: scale and shift must be both present or both absent");
        AV_CHECK(p.rows_per_group >= 1, "layernorm: rows_per_group must be >= 1");
        const int64_t G = (M + p.rows_per_group - 1) / p.rows_per_group;
        AV_CHECK(is_f32c(p.scale) && is_f32c(p.shift) && same_ne(p.scale, p.shift) && p.scale.ne[0] == C &&
                     av_tensor_nelements(p.scale) == G * C,
                 "layernorm: scale and shift must be contiguous f32 [" + std::to_string(G) + ", " + std::to_string(C) +
                     "] (ceil(M/rows_per_group), C)");
    }
    return av_status::success();
}

av_status av_check_groupnorm(const av_groupnorm_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "groupnorm: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "groupnorm: y must have the shape of x");
    AV_CHECK(p.x.ne[3] == 1, "groupnorm: x must be 3-D [B, C, S] (S = H*W)");
    AV_CHECK(alias_ok(p.y, p.x), "groupnorm: y must be x itself or not overlap it");
    AV_CHECK(p.eps >= 0.0f, "groupnorm: eps must be >= 0");
    const int64_t C = p.x.ne[1];
    const int64_t G = p.groups;
    AV_CHECK(G >= 1 && C % G == 0,
             "groupnorm: groups (" + std::to_string(G) + ") must divide the channels (" + std::to_string(C) + ")");
    AV_CHECK(vec_ok(p.weight, C) && vec_ok(p.bias, C),
             "groupnorm: weight and bias must be contiguous f32 [" + std::to_string(C) + "] when present");
    return av_status::success();
}

av_status av_check_modulate(const av_modulate_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "modulate: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "modulate: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "modulate: y must be x itself or not overlap it");
    AV_CHECK(av_tensor_present(p.scale) && av_tensor_present(p.shift), "modulate: scale and shift are required");
    AV_CHECK(is_f32c(p.scale) && is_f32c(p.shift), "modulate: scale and shift must be contiguous f32");
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const int64_t rpg = p.rows_per_group;
    AV_CHECK(rpg >= 1, "modulate: rows_per_group must be >= 1");
    const int64_t G = (M + rpg - 1) / rpg;
    AV_CHECK(p.scale.ne[0] == C && av_tensor_nelements(p.scale) == G * C,
             "modulate: scale must be [" + std::to_string(G) + ", " + std::to_string(C) +
                 "] (ceil(M/rows_per_group), C)");
    AV_CHECK(same_ne(p.scale, p.shift), "modulate: shift must have the shape of scale");
    return av_status::success();
}

av_status av_check_binary(const av_binary_params& p) {
    AV_CHECK(is_f32c(p.a) && is_f32c(p.b) && is_f32c(p.y), "binary: a, b and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.a, p.y), "binary: y must have the shape of a");
    AV_CHECK(p.kind == AV_BIN_ADD || p.kind == AV_BIN_MUL, "binary: kind must be 0 (add) or 1 (mul)");
    AV_CHECK(p.b_div >= 1, "binary: b_div must be >= 1");
    AV_CHECK(alias_ok(p.y, p.a), "binary: y must be a itself or not overlap it");
    AV_CHECK(!overlaps(p.y.data, av_tensor_nbytes(p.y), p.b.data, av_tensor_nbytes(p.b)),
             "binary: y must not overlap b");
    const int64_t N = p.a.ne[0];
    const int64_t Nb = p.b.ne[0];
    AV_CHECK(Nb == N || Nb == 1,
             "binary: b's last dimension must be " + std::to_string(N) + " or 1, got " + std::to_string(Nb));
    return av_status::success();
}

av_status av_check_unary(const av_unary_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "unary: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "unary: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "unary: y must be x itself or not overlap it");
    AV_CHECK(p.act >= AV_ACT_NONE && p.act <= AV_ACT_SIGMOID, "unary: act must be 0..3, got " + std::to_string(p.act));
    return av_status::success();
}

av_status av_check_softmax(const av_softmax_params& p) {
    AV_CHECK(is_f32c(p.x) && is_f32c(p.y), "softmax: x and y must be present, non-empty, contiguous f32");
    AV_CHECK(same_ne(p.x, p.y), "softmax: y must have the shape of x");
    AV_CHECK(alias_ok(p.y, p.x), "softmax: y must be x itself or not overlap it");
    return av_status::success();
}

av_status av_check_copy(const av_copy_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.y), "copy: x and y are required");
    AV_CHECK(same_ne(p.x, p.y), "copy: y must have the shape (ne) of x");
    AV_CHECK(is_contig(p.y, p.y.dtype), "copy: y must be non-empty and contiguous");
    const bool both_float = is_float_dtype(p.x.dtype) && is_float_dtype(p.y.dtype);
    const bool same_int = p.x.dtype == p.y.dtype && (p.x.dtype == AV_I32 || p.x.dtype == AV_U8);
    AV_CHECK(both_float || same_int, std::string("copy: unsupported conversion ") + av_dtype_name(p.x.dtype) +
                                         " -> " + av_dtype_name(p.y.dtype) +
                                         " (f32/f16/bf16 among themselves, i32->i32, u8->u8)");
    int64_t lo = 0, hi = 0;
    view_extent(p.x, &lo, &hi);
    AV_CHECK(!overlaps(static_cast<const uint8_t*>(p.x.data) + lo, static_cast<size_t>(hi - lo), p.y.data,
                       av_tensor_nbytes(p.y)),
             "copy: y must not overlap x");
    return av_status::success();
}

av_status av_check_qkv_prep(const av_qkv_prep_params& p) {
    AV_CHECK(is_f32c(p.qkv) && is_f32c(p.q_out), "qkv_prep: qkv and q_out must be present, non-empty, contiguous f32");
    AV_CHECK(is_kv_pair(p.k_cache, p.v_cache),
             "qkv_prep: k_cache and v_cache must be present, non-empty, contiguous and both f32 or both bf16");
    const int64_t D = p.q_out.ne[0], L = p.q_out.ne[1], H = p.q_out.ne[2], R = p.q_out.ne[3];
    const int64_t n_ctx = p.k_cache.ne[1];
    AV_CHECK(av_tensor_nelements(p.qkv) == R * L * 3 * H * D,
             "qkv_prep: qkv must hold [R, L, 3, H, D] = " + std::to_string(R * L * 3 * H * D) +
                 " elements for q_out " + shape4(R, H, L, D));
    AV_CHECK(shape_is(p.k_cache, R, H, n_ctx, D) && shape_is(p.v_cache, R, H, n_ctx, D),
             "qkv_prep: k_cache and v_cache must both be [R, H, n_ctx, D] with R, H, D of q_out " +
                 shape4(R, H, L, D));
    AV_CHECK(p.kv_pos >= 0 && p.kv_pos + L <= n_ctx,
             "qkv_prep: kv_pos + L (" + std::to_string(p.kv_pos) + " + " + std::to_string(L) +
                 ") must be within n_ctx = " + std::to_string(n_ctx));
    AV_CHECK(!overlaps(p.q_out, p.qkv) && !overlaps(p.k_cache, p.qkv) && !overlaps(p.v_cache, p.qkv) &&
                 !overlaps(p.q_out, p.k_cache) && !overlaps(p.q_out, p.v_cache) && !overlaps(p.k_cache, p.v_cache),
             "qkv_prep: qkv, q_out, k_cache and v_cache must not overlap");
    const bool l2 = p.l2norm != 0, rope = p.rope != 0;
    if (av_tensor_present(p.q_scale)) {
        AV_CHECK(l2, "qkv_prep: q_scale is applied with l2norm only; pass l2norm = 1 or drop q_scale");
        AV_CHECK(is_f32c(p.q_scale) && av_tensor_nelements(p.q_scale) == H && p.q_scale.ne[0] == H,
                 "qkv_prep: q_scale must be contiguous f32 [H] = [" + std::to_string(H) + "]");
    }
    if (rope) {
        AV_CHECK(D % 4 == 0, "qkv_prep: rope needs D % 4 == 0, got D = " + std::to_string(D));
        AV_CHECK(av_tensor_present(p.rope_pos) && is_f32c(p.rope_pos) && p.rope_pos.ne[0] == 2 &&
                     av_tensor_nelements(p.rope_pos) == 2 * L,
                 "qkv_prep: rope needs rope_pos, contiguous f32 [L, 2] = [" + std::to_string(L) + ", 2]");
        AV_CHECK(p.rope_base > 0.0f, "qkv_prep: rope_base must be > 0");
    }
    return av_status::success();
}

av_status av_check_attn(const av_attn_params& p) {
    AV_CHECK(is_f32c(p.q) && is_f32c(p.o), "attn: q and o must be present, non-empty, contiguous f32");
    AV_CHECK(is_kv_pair(p.k, p.v), "attn: k and v must be present, non-empty, contiguous and both f32 or both bf16");
    const int64_t D = p.q.ne[0], Lq = p.q.ne[1], H = p.q.ne[2], R = p.q.ne[3];
    const int64_t n_ctx = p.k.ne[1];
    AV_CHECK(shape_is(p.k, R, H, n_ctx, D) && shape_is(p.v, R, H, n_ctx, D),
             "attn: k and v must both be [R, H, n_ctx, D] with R, H, D of q " + shape4(R, H, Lq, D));
    AV_CHECK(shape_is(p.o, R, Lq, H, D), "attn: o must be [R, Lq, H, D] = " + shape4(R, Lq, H, D));
    AV_CHECK(p.n_kv >= 1 && p.n_kv <= n_ctx,
             "attn: n_kv must be in [1, n_ctx = " + std::to_string(n_ctx) + "], got " + std::to_string(p.n_kv));
    AV_CHECK(!overlaps(p.o, p.q) && !overlaps(p.o, p.k) && !overlaps(p.o, p.v), "attn: o must not overlap q, k or v");
    int64_t Rb = 1;
    if (av_tensor_present(p.key_bias)) {
        AV_CHECK(is_f32c(p.key_bias) && p.key_bias.ne[0] == n_ctx,
                 "attn: key_bias must be contiguous f32 [Rb, n_ctx] with n_ctx = " + std::to_string(n_ctx));
        Rb = av_tensor_nelements(p.key_bias) / n_ctx;
        AV_CHECK(R % Rb == 0, "attn: key_bias rows (" + std::to_string(Rb) + ") must divide R = " + std::to_string(R));
    }
    if (av_tensor_present(p.kb_beta))
        AV_CHECK(is_f32c(p.kb_beta) && p.kb_beta.ne[0] == H && av_tensor_nelements(p.kb_beta) == H,
                 "attn: kb_beta must be contiguous f32 [H] = [" + std::to_string(H) + "]");
    AV_CHECK(av_tensor_present(p.q_lvl) == av_tensor_present(p.k_lvl),
             "attn: q_lvl and k_lvl must be both present or both absent");
    if (av_tensor_present(p.q_lvl)) {
        AV_CHECK(is_i32c(p.q_lvl) && av_tensor_nelements(p.q_lvl) == Lq && p.q_lvl.ne[0] == Lq,
                 "attn: q_lvl must be contiguous i32 [Lq] = [" + std::to_string(Lq) + "]");
        AV_CHECK(is_i32c(p.k_lvl) && av_tensor_nelements(p.k_lvl) == n_ctx && p.k_lvl.ne[0] == n_ctx,
                 "attn: k_lvl must be contiguous i32 [n_ctx] = [" + std::to_string(n_ctx) + "]");
    }
    return av_status::success();
}

av_status av_check_resample(const av_resample_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.y), "resample: x and y are required");
    AV_CHECK(is_f32_contiguous(p.x) && is_f32_contiguous(p.y), "resample: x and y must be contiguous f32");
    AV_CHECK(p.mode >= AV_RESAMPLE_BICUBIC && p.mode <= AV_RESAMPLE_PIL_BICUBIC,
             "resample: unknown mode " + std::to_string(p.mode));
    AV_CHECK(p.x.ne[2] == p.y.ne[2] && p.x.ne[3] == p.y.ne[3],
             "resample: x " + shape_str_sp(p.x) + " and y " + shape_str_sp(p.y) + " differ in their plane count");
    const int64_t P = p.x.ne[2] * p.x.ne[3];
    const int64_t H = p.x.ne[1], W = p.x.ne[0], Ho = p.y.ne[1], Wo = p.y.ne[0];
    AV_CHECK(P > 0 && H > 0 && W > 0 && Ho > 0 && Wo > 0, "resample: empty tensor");
    return av_status::success();
}

av_status av_check_upsample_accum(const av_upsample_accum_params& p) {
    AV_CHECK(av_tensor_present(p.h) && av_tensor_present(p.f_hat), "upsample_accum: h and f_hat are required");
    AV_CHECK(is_f32_contiguous(p.h) && is_f32_contiguous(p.f_hat),
             "upsample_accum: h and f_hat must be contiguous f32");
    // h [B, Cv, ph, pw]; f_hat [B, Cv, Gh, Gw]
    const int64_t B = p.f_hat.ne[3], Cv = p.f_hat.ne[2], Gh = p.f_hat.ne[1], Gw = p.f_hat.ne[0];
    const int64_t ph = p.h.ne[1], pw = p.h.ne[0];
    AV_CHECK(p.h.ne[3] == B && p.h.ne[2] == Cv,
             "upsample_accum: h " + shape_str_sp(p.h) + " does not match f_hat " + shape_str_sp(p.f_hat) + " in [B, Cv]");
    AV_CHECK(B > 0 && Cv > 0 && Gh > 0 && Gw > 0 && ph > 0 && pw > 0, "upsample_accum: empty tensor");
    const bool has_phi = av_tensor_present(p.phi_w);
    const bool has_bias = av_tensor_present(p.phi_b);
    if (has_phi) {
        AV_CHECK(is_weight_dtype(p.phi_w.dtype) && av_tensor_is_contiguous(p.phi_w),
                 "upsample_accum: phi_w must be contiguous f32, f16 or bf16");
        AV_CHECK(
            p.phi_w.ne[0] == 3 && p.phi_w.ne[1] == 3 && p.phi_w.ne[2] == Cv && p.phi_w.ne[3] == Cv,
            "upsample_accum: phi_w " + shape_str_sp(p.phi_w) + " must be [Cv, Cv, 3, 3] with Cv = " + std::to_string(Cv));
    }
    if (has_bias) {
        AV_CHECK(has_phi, "upsample_accum: phi_b given without phi_w");
        AV_CHECK(is_f32_contiguous(p.phi_b) && av_tensor_nelements(p.phi_b) == Cv,
                 "upsample_accum: phi_b must be f32 [Cv] with Cv = " + std::to_string(Cv));
    }
    const bool has_next = av_tensor_present(p.next);
    const int64_t pn = p.pn_next;
    if (has_next) {
        AV_CHECK(pn > 0, "upsample_accum: next given with pn_next = " + std::to_string(pn));
        AV_CHECK(is_f32_contiguous(p.next), "upsample_accum: next must be contiguous f32");
        AV_CHECK(p.next.ne[0] == Cv && p.next.ne[1] == pn * pn && p.next.ne[2] == B && p.next.ne[3] == 1,
                 "upsample_accum: next " + shape_str_sp(p.next) + " must be [B, pn_next^2, Cv] = [" + std::to_string(B) +
                     ", " + std::to_string(pn * pn) + ", " + std::to_string(Cv) + "]");
    }
    return av_status::success();
}

av_status av_check_sample(const av_sample_params& p) {
    AV_CHECK(av_tensor_present(p.logits) && av_tensor_present(p.idx), "sample: logits and idx are required");
    AV_CHECK(p.logits.dtype == AV_F32 && av_tensor_is_contiguous(p.logits), "sample: logits must be contiguous f32");
    AV_CHECK(p.idx.dtype == AV_I32 && av_tensor_is_contiguous(p.idx), "sample: idx must be contiguous i32");
    // logits [R, L, V]; idx [B, L]
    const int64_t V = p.logits.ne[0], L = p.logits.ne[1], R = p.logits.ne[2];
    const int64_t B = p.idx.ne[1];
    AV_CHECK(p.logits.ne[3] == 1, "sample: logits " + shape_str_sp(p.logits) + " must be [R, L, V]");
    AV_CHECK(p.idx.ne[0] == L && p.idx.ne[2] == 1 && p.idx.ne[3] == 1,
             "sample: idx " + shape_str_sp(p.idx) + " must be [B, L] with L = " + std::to_string(L));
    AV_CHECK(p.cfg == 0 || p.cfg == 1, "sample: cfg must be 0 or 1, got " + std::to_string(p.cfg));
    AV_CHECK(R == (p.cfg ? 2 * B : B), "sample: logits have R = " + std::to_string(R) + " rows but " +
                                           (p.cfg ? "cfg needs 2B = " + std::to_string(2 * B)
                                                  : "B = " + std::to_string(B) + " is needed without cfg"));
    AV_CHECK(V > 0 && V <= INT32_MAX, "sample: vocabulary size out of range");
    if (p.top_k != 1)
        AV_CHECK(av_tensor_present(p.image_key) && p.image_key.dtype == AV_I32 &&
                     av_tensor_is_contiguous(p.image_key) && av_tensor_nelements(p.image_key) == B,
                 "sample: image_key must be i32 [B] with B = " + std::to_string(B) + " when sampling (top_k != 1)");
    return av_status::success();
}

av_status av_check_diffusion_step(const av_diffusion_step_params& p) {
    AV_CHECK(av_tensor_present(p.x) && av_tensor_present(p.image_key), "diffusion_step: x and image_key are required");
    AV_CHECK(is_f32_contiguous(p.x), "diffusion_step: x must be contiguous f32");
    // x [N, Cv]; o [halves * N, 2 Cv]; image_key [B] with N = B * tokens
    const int64_t Cv = p.x.ne[0], N = p.x.ne[1];
    AV_CHECK(p.x.ne[2] == 1 && p.x.ne[3] == 1, "diffusion_step: x " + shape_str_sp(p.x) + " must be [N, Cv]");
    AV_CHECK(Cv > 0 && Cv % 2 == 0, "diffusion_step: the channel count Cv = " + std::to_string(Cv) + " must be even");
    AV_CHECK(p.tokens > 0 && N % p.tokens == 0,
             "diffusion_step: x has " + std::to_string(N) + " rows, not a multiple of tokens = " + std::to_string(p.tokens));
    const int64_t B = N / p.tokens;
    AV_CHECK(B <= UINT32_MAX && p.tokens <= UINT32_MAX, "diffusion_step: too many rows");
    AV_CHECK(p.image_key.dtype == AV_I32 && av_tensor_is_contiguous(p.image_key) && av_tensor_nelements(p.image_key) == B,
             "diffusion_step: image_key must be i32 [B] with B = " + std::to_string(B));
    AV_CHECK(p.init == 0 || p.init == 1, "diffusion_step: init must be 0 or 1");
    if (p.init) return av_status::success();
    AV_CHECK(p.halves == 1 || p.halves == 2, "diffusion_step: halves must be 1 or 2, got " + std::to_string(p.halves));
    AV_CHECK(av_tensor_present(p.o) && is_f32_contiguous(p.o), "diffusion_step: o is required (contiguous f32)");
    AV_CHECK(p.o.ne[0] == 2 * Cv && p.o.ne[1] == p.halves * N && p.o.ne[2] == 1 && p.o.ne[3] == 1,
             "diffusion_step: o " + shape_str_sp(p.o) + " must be [halves * N, 2 * Cv] = [" +
                 std::to_string(p.halves * N) + ", " + std::to_string(2 * Cv) + "]");
    if (av_tensor_present(p.eps_out)) {
        AV_CHECK(is_f32_contiguous(p.eps_out), "diffusion_step: eps_out must be contiguous f32");
        AV_CHECK(p.eps_out.ne[0] == Cv && p.eps_out.ne[1] == N && p.eps_out.ne[2] == 1 && p.eps_out.ne[3] == 1,
                 "diffusion_step: eps_out " + shape_str_sp(p.eps_out) + " must be [N, Cv] like x");
    }
    return av_status::success();
}
