// av_status: how every native function reports failure. Nothing in native/ aborts the
// process; errors travel back to JS as {code, message} and become JS exceptions.
#pragma once

#include <string>
#include <utility>

enum av_status_code {
    AV_OK = 0,
    AV_ERR_INVALID,      // an invariant the caller should have guaranteed does not hold
    AV_ERR_UNSUPPORTED,  // the backend does not implement this op/dtype combination
    AV_ERR_OOM,          // allocation failed; the message carries the size asked for
    AV_ERR_BACKEND,      // a driver/runtime call failed
    AV_ERR_CANCELLED,
};

struct av_status {
    av_status_code code = AV_OK;
    std::string message;

    bool ok() const { return code == AV_OK; }
    static av_status success() { return {}; }
    static av_status error(av_status_code code, std::string message) {
        av_status s;
        s.code = code;
        s.message = std::move(message);
        return s;
    }
};

// Returns an AV_ERR_INVALID status from the enclosing function when cond is false.
#define AV_CHECK(cond, msg)                                                        \
    do {                                                                           \
        if (!(cond)) return av_status::error(AV_ERR_INVALID, std::string(msg));    \
    } while (0)

// Propagates a failed av_status from a callee.
#define AV_TRY(expr)                           \
    do {                                       \
        av_status av_try_s_ = (expr);          \
        if (!av_try_s_.ok()) return av_try_s_; \
    } while (0)
