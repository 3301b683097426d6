#include "info.h"

#include "core/backend.h"

Napi::Value av_binding_backend_info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array arr = Napi::Array::New(env);
    uint32_t i = 0;
    for (const auto& b : av_backend_list()) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", b.name);
        o.Set("compiled", b.compiled);
        o.Set("available", b.available);
        o.Set("reason", b.reason);
        o.Set("detail", b.detail);
        Napi::Array devs = Napi::Array::New(env);
        uint32_t j = 0;
        for (const auto& d : b.devices) {
            Napi::Object dv = Napi::Object::New(env);
            dv.Set("name", d.name);
            dv.Set("totalMemory", static_cast<double>(d.total_memory));
            dv.Set("computeCapability", std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor));
            devs.Set(j++, dv);
        }
        o.Set("devices", devs);
        arr.Set(i++, o);
    }
    return arr;
}

Napi::Value av_binding_set_cuda_library(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
        Napi::TypeError::New(env, "setCudaLibrary(path: string)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return Napi::Boolean::New(env, av_backend_set_cuda_library(info[0].As<Napi::String>().Utf8Value()));
}
