// `_ops(backend, op, params)`: runs one op on a named backend over typed arrays, for parity
// tests and benchmarks. Fields are described by a table per op (name, kind, offset) so that
// JS keys equal the C++ field names of core/ops.h. On the CPU backend tensors are used in
// place; on other backends they are uploaded, and output tensors are downloaded back into
// the caller's arrays when the promise resolves.
#include <napi.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "args.h"
#include "core/backend.h"
#include "test-ops.h"
#include "workers.h"

namespace {

enum field_kind { F_IN, F_OUT, F_INOUT, F_I32, F_I64, F_U64, F_F32 };

struct field {
    const char* name;
    field_kind kind;
    size_t offset;
};

#define T_IN(S, f) {#f, F_IN, offsetof(S, f)}
#define T_OUT(S, f) {#f, F_OUT, offsetof(S, f)}
#define T_INOUT(S, f) {#f, F_INOUT, offsetof(S, f)}
#define S_I32(S, f) {#f, F_I32, offsetof(S, f)}
#define S_I64(S, f) {#f, F_I64, offsetof(S, f)}
#define S_U64(S, f) {#f, F_U64, offsetof(S, f)}
#define S_F32(S, f) {#f, F_F32, offsetof(S, f)}

struct op_desc {
    size_t size;
    std::vector<field> fields;
    void (*init)(void*);
};

template <typename P>
void init_params(void* p) {
    new (p) P();
}

const std::map<av_op, op_desc>& op_table() {
    using L = av_linear_params;
    using N = av_layernorm_params;
    using M = av_modulate_params;
    using B = av_binary_params;
    using U = av_unary_params;
    using S = av_softmax_params;
    using G = av_groupnorm_params;
    using Q = av_qkv_prep_params;
    using A = av_attn_params;
    using C = av_conv2d_params;
    using R = av_resample_params;
    using VL = av_vq_lookup_params;
    using VN = av_vq_nearest_params;
    using UA = av_upsample_accum_params;
    using SA = av_sample_params;
    using CP = av_copy_params;
    using DS = av_diffusion_step_params;
    static const std::map<av_op, op_desc> t = {
        {AV_OP_LINEAR,
         {sizeof(L),
          {T_IN(L, x), T_IN(L, w), T_IN(L, bias), T_IN(L, gate), T_IN(L, res), T_OUT(L, y), S_I32(L, act),
           S_I64(L, rows_per_group)},
          init_params<L>}},
        {AV_OP_LAYERNORM,
         {sizeof(N),
          {T_IN(N, x), T_IN(N, weight), T_IN(N, bias), T_IN(N, scale), T_IN(N, shift), T_OUT(N, y), S_F32(N, eps),
           S_I64(N, rows_per_group)},
          init_params<N>}},
        {AV_OP_MODULATE,
         {sizeof(M), {T_IN(M, x), T_IN(M, scale), T_IN(M, shift), T_OUT(M, y), S_I64(M, rows_per_group)},
          init_params<M>}},
        {AV_OP_BINARY,
         {sizeof(B),
          {T_IN(B, a), T_IN(B, b), T_OUT(B, y), S_I32(B, kind), S_F32(B, alpha), S_F32(B, beta), S_I64(B, b_div)},
          init_params<B>}},
        {AV_OP_UNARY, {sizeof(U), {T_IN(U, x), T_OUT(U, y), S_I32(U, act)}, init_params<U>}},
        {AV_OP_SOFTMAX, {sizeof(S), {T_IN(S, x), T_OUT(S, y), S_F32(S, scale)}, init_params<S>}},
        {AV_OP_GROUPNORM,
         {sizeof(G),
          {T_IN(G, x), T_IN(G, weight), T_IN(G, bias), T_OUT(G, y), S_I32(G, groups), S_F32(G, eps),
           S_I32(G, silu)},
          init_params<G>}},
        {AV_OP_QKV_PREP,
         {sizeof(Q),
          {T_IN(Q, qkv), T_IN(Q, q_scale), T_IN(Q, rope_pos), T_OUT(Q, q_out), T_INOUT(Q, k_cache),
           T_INOUT(Q, v_cache), S_I64(Q, kv_pos), S_I32(Q, l2norm), S_I32(Q, rope), S_F32(Q, rope_base)},
          init_params<Q>}},
        {AV_OP_ATTN,
         {sizeof(A),
          {T_IN(A, q), T_IN(A, k), T_IN(A, v), T_IN(A, key_bias), T_IN(A, kb_beta), T_IN(A, q_lvl), T_IN(A, k_lvl),
           T_OUT(A, o), S_I64(A, n_kv), S_F32(A, scale)},
          init_params<A>}},
        {AV_OP_CONV2D,
         {sizeof(C),
          {T_IN(C, x), T_IN(C, w), T_IN(C, bias), T_IN(C, res), T_OUT(C, y), S_I32(C, stride), S_I32(C, pad_t),
           S_I32(C, pad_l), S_I32(C, pad_b), S_I32(C, pad_r), S_I32(C, dilation), S_I32(C, act)},
          init_params<C>}},
        {AV_OP_RESAMPLE, {sizeof(R), {T_IN(R, x), T_OUT(R, y), S_I32(R, mode)}, init_params<R>}},
        {AV_OP_VQ_LOOKUP,
         {sizeof(VL), {T_IN(VL, idx), T_IN(VL, codebook), T_OUT(VL, y), S_I32(VL, channel_major)},
          init_params<VL>}},
        {AV_OP_VQ_NEAREST,
         {sizeof(VN), {T_IN(VN, z), T_IN(VN, codebook), T_OUT(VN, idx), S_I32(VN, channel_major)},
          init_params<VN>}},
        {AV_OP_UPSAMPLE_ACCUM,
         {sizeof(UA),
          {T_IN(UA, h), T_IN(UA, phi_w), T_IN(UA, phi_b), T_INOUT(UA, f_hat), T_OUT(UA, next),
           S_F32(UA, phi_ratio), S_I32(UA, pn_next)},
          init_params<UA>}},
        {AV_OP_SAMPLE,
         {sizeof(SA),
          {T_IN(SA, logits), T_IN(SA, image_key), T_OUT(SA, idx), S_I32(SA, cfg), S_F32(SA, t), S_I32(SA, top_k),
           S_F32(SA, top_p), S_U64(SA, seed), S_I32(SA, scale)},
          init_params<SA>}},
        {AV_OP_COPY, {sizeof(CP), {T_IN(CP, x), T_OUT(CP, y)}, init_params<CP>}},
        {AV_OP_DIFFUSION_STEP,
         {sizeof(DS),
          {T_INOUT(DS, x), T_IN(DS, o), T_IN(DS, image_key), T_OUT(DS, eps_out), S_I64(DS, tokens), S_I32(DS, init),
           S_I32(DS, noise), S_I32(DS, halves), S_I32(DS, stream), S_U64(DS, seed), S_F32(DS, w), S_F32(DS, c_x),
           S_F32(DS, c_eps), S_F32(DS, coef1), S_F32(DS, coef2), S_F32(DS, log_beta), S_F32(DS, post_log_var)},
          init_params<DS>}},
    };
    return t;
}

// One backend instance per name, created on first use and kept for the process.
std::mutex g_backends_m;
std::map<std::string, std::unique_ptr<av_backend>> g_backends;

av_status get_backend(const std::string& name, av_backend** out) {
    std::lock_guard<std::mutex> lk(g_backends_m);
    auto it = g_backends.find(name);
    if (it == g_backends.end()) {
        std::unique_ptr<av_backend> be;
        AV_TRY(av_backend_create(name, 0, &be));
        it = g_backends.emplace(name, std::move(be)).first;
    }
    *out = it->second.get();
    return av_status::success();
}

struct op_job {
    av_backend* be = nullptr;
    av_op op = AV_OP_COUNT;
    std::vector<uint8_t> params;  // the av_<op>_params struct
    struct slot {
        av_tensor* t;
        void* host;
        bool out;
        bool in;
    };
    std::vector<slot> tensors;
    int repeat = 1;
};

av_status run_job(op_job& job) {
    bool host = std::string(job.be->name()) == "cpu";
    std::vector<void*> dev;
    auto release = [&] {
        for (void* p : dev) job.be->free(p);
    };
    if (!host) {
        for (auto& s : job.tensors) {
            void* d = nullptr;
            size_t n = av_tensor_nbytes(*s.t);
            av_status st = job.be->alloc(n, &d);
            if (!st.ok()) {
                release();
                return st;
            }
            dev.push_back(d);
            st = job.be->upload(d, s.host, n);
            if (!st.ok()) {
                release();
                return st;
            }
            s.t->data = d;
        }
    }
    av_status st;
    for (int r = 0; r < job.repeat && st.ok(); ++r) st = job.be->compute(job.op, job.params.data());
    if (st.ok()) st = job.be->synchronize();
    if (!host && st.ok()) {
        for (auto& s : job.tensors)
            if (s.out) {
                st = job.be->download(s.host, s.t->data, av_tensor_nbytes(*s.t));
                if (!st.ok()) break;
            }
    }
    release();
    return st;
}

}  // namespace

Napi::Value av_binding_test_ops(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject()) {
        Napi::TypeError::New(env, "_ops(backend: string, op: string, params: object, repeat?: number)")
            .ThrowAsJavaScriptException();
        return env.Undefined();
    }
    std::string be_name = info[0].As<Napi::String>().Utf8Value();
    std::string op_name = info[1].As<Napi::String>().Utf8Value();
    Napi::Object po = info[2].As<Napi::Object>();

    auto job = std::make_shared<op_job>();
    job->op = av_op_from_name(op_name.c_str());
    auto it = op_table().find(job->op);
    if (it == op_table().end()) {
        Napi::Error::New(env, "_ops: unknown op '" + op_name + "'").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    if (info.Length() > 3 && info[3].IsNumber()) job->repeat = std::max(1, info[3].As<Napi::Number>().Int32Value());
    av_status bs = get_backend(be_name, &job->be);
    if (!bs.ok()) {
        av_napi_error(env, bs).ThrowAsJavaScriptException();
        return env.Undefined();
    }

    const op_desc& d = it->second;
    job->params.resize(d.size);
    d.init(job->params.data());
    uint8_t* base = job->params.data();
    av_args args(env);
    std::vector<Napi::Value> keep;
    for (const field& f : d.fields) {
        void* dst = base + f.offset;
        switch (f.kind) {
            case F_IN:
            case F_OUT:
            case F_INOUT: {
                Napi::Value holder;
                av_tensor t = args.tensor(po, f.name, &holder);
                *static_cast<av_tensor*>(dst) = t;
                if (t.data != nullptr) {
                    keep.push_back(holder);
                    job->tensors.push_back({static_cast<av_tensor*>(dst), t.data, f.kind != F_IN, f.kind != F_OUT});
                }
                break;
            }
            case F_I32:
                *static_cast<int32_t*>(dst) =
                    static_cast<int32_t>(args.int64(po, f.name, *static_cast<int32_t*>(dst)));
                break;
            case F_I64: *static_cast<int64_t*>(dst) = args.int64(po, f.name, *static_cast<int64_t*>(dst)); break;
            case F_U64: *static_cast<uint64_t*>(dst) = args.uint64(po, f.name, *static_cast<uint64_t*>(dst)); break;
            case F_F32:
                *static_cast<float*>(dst) =
                    static_cast<float>(args.number(po, f.name, *static_cast<float*>(dst)));
                break;
        }
    }
    if (!args.ok()) {
        Napi::TypeError::New(env, "_ops " + op_name + ": " + args.err).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return av_task_worker::run(
        env, "alignvar:_ops", [job] { return run_job(*job); }, nullptr, keep);
}
