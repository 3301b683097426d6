// Module init: one exports.Set line per export. Test-only exports start with `_`.
#include <napi.h>

#include "binding/info.h"
#include "binding/session.h"
#include "binding/test-blas.h"
#include "binding/test-ops.h"

static Napi::Object av_init(Napi::Env env, Napi::Object exports) {
    exports.Set("backendInfo", Napi::Function::New(env, av_binding_backend_info, "backendInfo"));
    exports.Set("_blasSgemm", Napi::Function::New(env, av_binding_test_blas_sgemm, "_blasSgemm"));
    exports.Set("Session", av_session::init(env));
    exports.Set("_ops", Napi::Function::New(env, av_binding_test_ops, "_ops"));
    return exports;
}

NODE_API_MODULE(alignvar, av_init)
