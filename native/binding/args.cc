#include "args.h"

bool av_dtype_from_name(const std::string& s, av_dtype* out) {
    if (s == "f32") *out = AV_F32;
    else if (s == "f16") *out = AV_F16;
    else if (s == "bf16") *out = AV_BF16;
    else if (s == "i32") *out = AV_I32;
    else if (s == "u8") *out = AV_U8;
    else return false;
    return true;
}

double av_args::number(const Napi::Object& o, const char* key, double def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsNumber()) {
        fail(std::string(key) + " must be a number");
        return def;
    }
    return v.As<Napi::Number>().DoubleValue();
}

int64_t av_args::int64(const Napi::Object& o, const char* key, int64_t def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (v.IsBigInt()) {
        bool lossless = true;
        return v.As<Napi::BigInt>().Int64Value(&lossless);
    }
    if (!v.IsNumber()) {
        fail(std::string(key) + " must be an integer");
        return def;
    }
    return v.As<Napi::Number>().Int64Value();
}

uint64_t av_args::uint64(const Napi::Object& o, const char* key, uint64_t def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (v.IsBigInt()) {
        bool lossless = true;
        return v.As<Napi::BigInt>().Uint64Value(&lossless);
    }
    if (!v.IsNumber()) {
        fail(std::string(key) + " must be an integer or BigInt");
        return def;
    }
    return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
}

bool av_args::boolean(const Napi::Object& o, const char* key, bool def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
    if (v.IsNumber()) return v.As<Napi::Number>().Int32Value() != 0;
    fail(std::string(key) + " must be a boolean");
    return def;
}

std::string av_args::string(const Napi::Object& o, const char* key, const std::string& def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return def;
    if (!v.IsString()) {
        fail(std::string(key) + " must be a string");
        return def;
    }
    return v.As<Napi::String>().Utf8Value();
}

av_tensor av_args::tensor(const Napi::Object& o, const char* key, Napi::Value* holder) {
    av_tensor t;
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return t;
    if (!v.IsObject()) {
        fail(std::string(key) + " must be a tensor object {data, shape, dtype}");
        return t;
    }
    Napi::Object to = v.As<Napi::Object>();
    Napi::Value data = to.Get("data");
    if (!data.IsTypedArray()) {
        fail(std::string(key) + ".data must be a TypedArray");
        return t;
    }
    Napi::TypedArray ta = data.As<Napi::TypedArray>();
    std::string dt = string(to, "dtype", "f32");
    if (!av_dtype_from_name(dt, &t.dtype)) {
        fail(std::string(key) + ".dtype '" + dt + "' is unknown");
        return t;
    }
    Napi::Value shape = to.Get("shape");
    if (!shape.IsArray()) {
        fail(std::string(key) + ".shape must be an array");
        return t;
    }
    Napi::Array sa = shape.As<Napi::Array>();
    uint32_t nd = sa.Length();
    if (nd == 0 || nd > 4) {
        fail(std::string(key) + ".shape must have 1 to 4 dimensions");
        return t;
    }
    for (uint32_t i = 0; i < nd; ++i) {
        Napi::Value d = sa.Get(i);
        if (!d.IsNumber() || d.As<Napi::Number>().Int64Value() < 1) {
            fail(std::string(key) + ".shape entries must be positive integers");
            return t;
        }
        t.ne[nd - 1 - i] = d.As<Napi::Number>().Int64Value();  // row-major -> ne[0] innermost
    }
    t.nb[0] = static_cast<int64_t>(av_dtype_size(t.dtype));
    for (int i = 1; i < 4; ++i) t.nb[i] = t.nb[i - 1] * t.ne[i - 1];
    size_t need = av_tensor_nbytes(t);
    if (ta.ByteLength() != need) {
        fail(std::string(key) + ": data has " + std::to_string(ta.ByteLength()) + " bytes, shape and dtype need " +
             std::to_string(need));
        return t;
    }
    t.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    *holder = data;
    return t;
}
