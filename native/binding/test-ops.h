#pragma once
#include <napi.h>

Napi::Value av_binding_test_ops(const Napi::CallbackInfo& info);
