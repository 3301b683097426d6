// Typed getters from JS objects: type extraction only, no range checks (those live in
// src/options.ts and src/weights/safetensors.ts). Each getter records the first problem in
// `err` and returns a default, so a caller can parse a whole struct and then throw once.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

struct av_args {
    Napi::Env env;
    std::string err;

    explicit av_args(Napi::Env e) : env(e) {}
    bool ok() const { return err.empty(); }
    void fail(const std::string& m) {
        if (err.empty()) err = m;
    }

    double number(const Napi::Object& o, const char* key, double def);
    int64_t int64(const Napi::Object& o, const char* key, int64_t def);
    uint64_t uint64(const Napi::Object& o, const char* key, uint64_t def);  // number or BigInt
    bool boolean(const Napi::Object& o, const char* key, bool def);
    std::string string(const Napi::Object& o, const char* key, const std::string& def);

    // {data: TypedArray, shape: number[] (row-major), dtype?: 'f32'|'f16'|'bf16'|'i32'|'u8'}.
    // Absent or null -> a tensor with data == nullptr. The view points into the typed array.
    av_tensor tensor(const Napi::Object& o, const char* key, Napi::Value* holder);
};

bool av_dtype_from_name(const std::string& s, av_dtype* out);
