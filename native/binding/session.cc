#include "session.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "workers.h"

namespace {

void throw_type(Napi::Env env, const std::string& m) { Napi::TypeError::New(env, m).ThrowAsJavaScriptException(); }

// number[] -> int64 list (type extraction only).
std::vector<int64_t> int_list(av_args& a, const Napi::Object& o, const char* key) {
    std::vector<int64_t> out;
    Napi::Value v = o.Get(key);
    if (!v.IsArray()) {
        a.fail(std::string(key) + " must be an array of integers");
        return out;
    }
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value e = arr.Get(i);
        if (!e.IsNumber()) {
            a.fail(std::string(key) + " must be an array of integers");
            return out;
        }
        out.push_back(e.As<Napi::Number>().Int64Value());
    }
    return out;
}

// Float32Array / Int32Array contents copied into a vector.
template <typename T, napi_typedarray_type TA>
std::vector<T> typed_copy(av_args& a, const Napi::Object& o, const char* key, const char* type_name) {
    std::vector<T> out;
    Napi::Value v = o.Get(key);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TA) {
        a.fail(std::string(key) + " must be a " + type_name);
        return out;
    }
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    out.resize(ta.ElementLength());
    std::memcpy(out.data(), static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), ta.ByteLength());
    return out;
}

av_model_config parse_config(av_args& a, const Napi::Object& o) {
    av_model_config c;
    c.depth = a.int64(o, "depth", 0);
    c.width = a.int64(o, "width", 0);
    c.heads = a.int64(o, "heads", 0);
    c.mlp_hidden = a.int64(o, "mlp_hidden", 0);
    c.vocab = a.int64(o, "vocab", 0);
    c.cvae = a.int64(o, "cvae", 0);
    c.num_classes = a.int64(o, "num_classes", 0);
    c.patch_nums = int_list(a, o, "patch_nums");
    c.cond_ch = int_list(a, o, "cond_ch");
    c.vq_ch = a.int64(o, "vq_ch", 0);
    c.vq_ch_mult = int_list(a, o, "vq_ch_mult");
    c.vq_num_res = a.int64(o, "vq_num_res", 0);
    c.vq_attn_at_lowest = a.boolean(o, "vq_attn_at_lowest", true);
    c.n_phi = a.int64(o, "n_phi", 0);
    c.quant_resi = static_cast<float>(a.number(o, "quant_resi", 0.5));
    c.rope_base = static_cast<float>(a.number(o, "rope_base", 10000.0));
    c.sca = a.boolean(o, "sca", false);
    c.decoder_lr = a.boolean(o, "decoder_lr", false);
    c.token_mean = a.boolean(o, "token_mean", false);
    c.refiner_width = a.int64(o, "refiner_width", 0);
    c.refiner_blocks = a.int64(o, "refiner_blocks", 0);
    c.rope = typed_copy<float, napi_float32_array>(a, o, "rope", "Float32Array");
    c.phi_index = typed_copy<int32_t, napi_int32_array>(a, o, "phi_index", "Int32Array");
    const std::string kv = a.string(o, "kv_dtype", "f32");
    if (kv == "bf16") c.kv_dtype = AV_BF16;
    else if (kv != "f32") a.fail("kv_dtype must be 'f32' or 'bf16', got '" + kv + "'");
    return c;
}

}  // namespace

Napi::Function av_session::init(Napi::Env env) {
    return DefineClass(env, "Session",
                       {
                           InstanceMethod<&av_session::load_tensor>("loadTensor"),
                           InstanceMethod<&av_session::finalize>("finalize"),
                           InstanceMethod<&av_session::prepare>("prepare"),
                           InstanceMethod<&av_session::step>("step"),
                           InstanceMethod<&av_session::refine>("refine"),
                           InstanceMethod<&av_session::decode>("decode"),
                           InstanceMethod<&av_session::debug>("_debug"),
                           InstanceMethod<&av_session::info>("info"),
                           InstanceMethod<&av_session::dispose>("dispose"),
                       });
}

av_session::av_session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<av_session>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsObject()) {
        throw_type(env, "new Session(backend: string, device: number, config: object)");
        return;
    }
    av_args a(env);
    av_model_config cfg = parse_config(a, info[2].As<Napi::Object>());
    if (!a.ok()) {
        throw_type(env, "Session config: " + a.err);
        return;
    }
    std::unique_ptr<av_engine> e;
    av_status s = av_engine::create(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(),
                                    std::move(cfg), &e);
    if (!s.ok()) {
        av_napi_error(env, s).ThrowAsJavaScriptException();
        return;
    }
    engine_ = std::move(e);
}

bool av_session::acquire(Napi::Env env, const char* method) {
    if (!engine_) {
        av_napi_error(env, av_status::error(AV_ERR_INVALID, std::string(method) + ": the session is disposed"))
            .ThrowAsJavaScriptException();
        return false;
    }
    bool expected = false;
    if (!busy_->compare_exchange_strong(expected, true)) {
        av_napi_error(env, av_status::error(AV_ERR_INVALID,
                                            std::string(method) + ": another call on this session is still running"))
            .ThrowAsJavaScriptException();
        return false;
    }
    return true;
}

// Runs `work` on the engine off the main thread and clears the busy flag when it is done.
#define AV_SESSION_RUN(name, work, result, keep)                                           \
    do {                                                                                   \
        auto busy = busy_;                                                                 \
        return av_task_worker::run(                                                        \
            env, name,                                                                     \
            [busy, work]() mutable {                                                       \
                av_status st = work();                                                     \
                busy->store(false);                                                        \
                return st;                                                                 \
            },                                                                             \
            result, keep);                                                                 \
    } while (0)

Napi::Value av_session::load_tensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
        throw_type(env, "loadTensor(name: string, tensor: {data, shape, dtype})");
        return env.Undefined();
    }
    av_args a(env);
    Napi::Object holder = Napi::Object::New(env);
    holder.Set("tensor", info[1]);
    Napi::Value data;
    av_tensor t = a.tensor(holder, "tensor", &data);
    if (a.ok() && t.data == nullptr) a.fail("tensor is required");
    if (!a.ok()) {
        throw_type(env, "loadTensor: " + a.err);
        return env.Undefined();
    }
    if (!acquire(env, "loadTensor")) return env.Undefined();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    // The row-major shape as given (already checked by av_args::tensor), ones included.
    std::vector<int64_t> shape;
    Napi::Array sa = info[1].As<Napi::Object>().Get("shape").As<Napi::Array>();
    for (uint32_t i = 0; i < sa.Length(); ++i) shape.push_back(sa.Get(i).As<Napi::Number>().Int64Value());
    auto engine = engine_;
    auto work = [engine, name, t, shape]() { return engine->load_tensor(name, t.data, t.dtype, shape); };
    AV_SESSION_RUN("alignvar:loadTensor", work, nullptr, (std::vector<Napi::Value>{info.This(), data}));
}

Napi::Value av_session::finalize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!acquire(env, "finalize")) return env.Undefined();
    auto engine = engine_;
    auto work = [engine]() { return engine->finalize(); };
    AV_SESSION_RUN("alignvar:finalize", work, nullptr, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::prepare(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
        throw_type(env, "prepare({lr, image_keys, seed, cfg, top_k, top_p, debug})");
        return env.Undefined();
    }
    Napi::Object o = info[0].As<Napi::Object>();
    av_args a(env);
    auto args = std::make_shared<av_prepare_args>();
    Napi::Value lr_holder;
    av_tensor lr = a.tensor(o, "lr", &lr_holder);
    if (a.ok() && (lr.data == nullptr || lr.dtype != AV_U8 || lr.ne[0] != 3))
        a.fail("lr must be a u8 tensor [B, h, w, 3]");
    args->image_keys = typed_copy<int32_t, napi_int32_array>(a, o, "image_keys", "Int32Array");
    args->seed = a.uint64(o, "seed", 0);
    args->cfg = a.number(o, "cfg", 0.0);
    args->top_k = static_cast<int32_t>(a.int64(o, "top_k", 1));
    args->top_p = static_cast<float>(a.number(o, "top_p", 0.0));
    args->debug = a.boolean(o, "debug", false);
    if (!a.ok()) {
        throw_type(env, "prepare: " + a.err);
        return env.Undefined();
    }
    args->B = lr.ne[3];
    args->lr_h = lr.ne[2];
    args->lr_w = lr.ne[1];
    const uint8_t* p = static_cast<const uint8_t*>(lr.data);
    args->lr.assign(p, p + av_tensor_nbytes(lr));
    if (!acquire(env, "prepare")) return env.Undefined();
    auto engine = engine_;
    auto work = [engine, args]() { return engine->prepare(*args); };
    AV_SESSION_RUN("alignvar:prepare", work, nullptr, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
        throw_type(env, "step(si: number)");
        return env.Undefined();
    }
    if (!acquire(env, "step")) return env.Undefined();
    const int64_t si = info[0].As<Napi::Number>().Int64Value();
    auto engine = engine_;
    auto idx = std::make_shared<std::vector<int32_t>>();
    auto work = [engine, si, idx]() { return engine->step(si, idx.get()); };
    auto result = [idx](Napi::Env e) -> Napi::Value {
        Napi::Int32Array out = Napi::Int32Array::New(e, idx->size());
        std::memcpy(out.Data(), idx->data(), idx->size() * sizeof(int32_t));
        return out;
    };
    AV_SESSION_RUN("alignvar:step", work, result, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::refine(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!acquire(env, "refine")) return env.Undefined();
    auto engine = engine_;
    auto work = [engine]() { return engine->refine(); };
    AV_SESSION_RUN("alignvar:refine", work, nullptr, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::decode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    av_args a(env);
    av_decode_args d;
    if (info.Length() >= 1 && info[0].IsObject()) {
        const std::string cf = a.string(info[0].As<Napi::Object>(), "color_fix", "adain");
        if (cf == "adain") d.color_fix = AV_COLOR_FIX_ADAIN;
        else if (cf == "wavelet") d.color_fix = AV_COLOR_FIX_WAVELET;
        else if (cf == "none") d.color_fix = AV_COLOR_FIX_NONE;
        else a.fail("color_fix must be 'adain', 'wavelet' or 'none'");
        const double rs = a.number(info[0].As<Napi::Object>(), "residual_scale", 0.0);
        if (!(rs == 0.0 || (rs >= 1.0 / 64 && rs <= 64.0))) a.fail("residual_scale must be 0 or in [1/64, 64]");
        d.residual_scale = static_cast<float>(rs);
    }
    if (!a.ok()) {
        throw_type(env, "decode: " + a.err);
        return env.Undefined();
    }
    if (!acquire(env, "decode")) return env.Undefined();
    auto engine = engine_;
    auto rgb = std::make_shared<std::vector<uint8_t>>();
    auto work = [engine, d, rgb]() { return engine->decode(d, rgb.get()); };
    auto result = [rgb](Napi::Env e) -> Napi::Value {
        Napi::Uint8Array out = Napi::Uint8Array::New(e, rgb->size());
        std::memcpy(out.Data(), rgb->data(), rgb->size());
        return out;
    };
    AV_SESSION_RUN("alignvar:decode", work, result, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::debug(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
        throw_type(env, "_debug(name: string)");
        return env.Undefined();
    }
    if (!acquire(env, "_debug")) return env.Undefined();
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    auto engine = engine_;
    auto data = std::make_shared<std::vector<float>>();
    auto shape = std::make_shared<std::vector<int64_t>>();
    auto work = [engine, name, data, shape]() { return engine->debug(name, data.get(), shape.get()); };
    auto result = [data, shape](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        Napi::Float32Array arr = Napi::Float32Array::New(e, data->size());
        std::memcpy(arr.Data(), data->data(), data->size() * sizeof(float));
        Napi::Array sh = Napi::Array::New(e, shape->size());
        for (size_t i = 0; i < shape->size(); ++i) sh.Set(static_cast<uint32_t>(i), static_cast<double>((*shape)[i]));
        o.Set("data", arr);
        o.Set("shape", sh);
        return o;
    };
    AV_SESSION_RUN("alignvar:_debug", work, result, (std::vector<Napi::Value>{info.This()}));
}

Napi::Value av_session::info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!engine_) {
        o.Set("disposed", true);
        return o;
    }
    o.Set("disposed", false);
    o.Set("backend", engine_->backend_name());
    // Sizes are only read while no worker runs (they change in finalize/prepare).
    if (!busy_->load()) {
        o.Set("weight_bytes", static_cast<double>(engine_->weight_bytes()));
        o.Set("state_bytes", static_cast<double>(engine_->state_bytes()));
    }
    o.Set("hr_size", static_cast<double>(engine_->config().hr_size));
    return o;
}

Napi::Value av_session::dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_) return av_task_worker::run(env, "alignvar:dispose", [] { return av_status::success(); }, nullptr, {});
    if (!acquire(env, "dispose")) return env.Undefined();
    auto engine = std::move(engine_);
    engine_.reset();
    // The engine (weights, caches, backend) is released on the worker thread.
    auto work = [engine]() mutable {
        engine.reset();
        return av_status::success();
    };
    AV_SESSION_RUN("alignvar:dispose", work, nullptr, (std::vector<Napi::Value>{info.This()}));
}
