// Session: the JS handle of one av_engine (backend + weights + KV cache + batch state).
// Every compute method parses its arguments on the main thread, runs on a libuv thread
// through av_task_worker (holding a reference to the Session) and returns a Promise. Calls
// must not overlap: a call made while another is running rejects with AV_ERR_INVALID.
//
//   new Session(backend, device, config)         config keys = av_model_config fields
//   loadTensor(name, {data, shape, dtype})       -> Promise<void>
//   finalize()                                   -> Promise<void>
//   prepare({lr, image_keys, seed, cfg, top_k, top_p, debug}) -> Promise<void>
//   step(si)                                     -> Promise<Int32Array> tokens [B, pn^2]
//   refine()                                      -> Promise<void> (models with the VARSR refiner)
//   decode({color_fix, residual_scale})          -> Promise<Uint8Array> [B, S, S, 3]
//   _debug(name)                                 -> Promise<{data: Float32Array, shape}>
//   info()                                       -> {backend, weight_bytes, state_bytes}
//   dispose()                                    -> Promise<void>
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "model/engine.h"

class av_session : public Napi::ObjectWrap<av_session> {
public:
    static Napi::Function init(Napi::Env env);
    explicit av_session(const Napi::CallbackInfo& info);

private:
    Napi::Value load_tensor(const Napi::CallbackInfo& info);
    Napi::Value finalize(const Napi::CallbackInfo& info);
    Napi::Value prepare(const Napi::CallbackInfo& info);
    Napi::Value step(const Napi::CallbackInfo& info);
    Napi::Value refine(const Napi::CallbackInfo& info);
    Napi::Value decode(const Napi::CallbackInfo& info);
    Napi::Value debug(const Napi::CallbackInfo& info);
    Napi::Value info(const Napi::CallbackInfo& info);
    Napi::Value dispose(const Napi::CallbackInfo& info);

    // Marks the session busy; throws (and returns false) when it is disposed or already busy.
    bool acquire(Napi::Env env, const char* method);

    std::shared_ptr<av_engine> engine_;
    std::shared_ptr<std::atomic<bool>> busy_ = std::make_shared<std::atomic<bool>>(false);
};
