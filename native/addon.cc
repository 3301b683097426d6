// Module init: one exports.Set line per export. Test-only exports start with `_` and exist in
// dev builds only (CMake AV_TEST_BINDINGS, off for release builds and prebuilds).
#include <napi.h>

#include "binding/info.h"
#include "binding/session.h"
#ifdef AV_TEST_BINDINGS
#include "binding/test-blas.h"
#include "binding/test-ops.h"
#endif  // AV_TEST_BINDINGS

static Napi::Object av_init(Napi::Env env, Napi::Object exports) {
    exports.Set("backendInfo", Napi::Function::New(env, av_binding_backend_info, "backendInfo"));
    exports.Set("setCudaLibrary", Napi::Function::New(env, av_binding_set_cuda_library, "setCudaLibrary"));
    exports.Set("Session", av_session::init(env));
#ifdef AV_TEST_BINDINGS
    exports.Set("_blasSgemm", Napi::Function::New(env, av_binding_test_blas_sgemm, "_blasSgemm"));
    exports.Set("_ops", Napi::Function::New(env, av_binding_test_ops, "_ops"));
#endif  // AV_TEST_BINDINGS
    return exports;
}

NODE_API_MODULE(alignvar, av_init)
