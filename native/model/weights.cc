#include "weights.h"

#include <cstring>

av_status av_buffer::alloc(av_backend* be, size_t bytes) {
    reset();
    be_ = be;
    bytes_ = bytes;
    return be->alloc(bytes == 0 ? 4 : bytes, &ptr_);
}

void av_buffer::reset() {
    if (ptr_ != nullptr && be_ != nullptr) be_->free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
}

static float av_load_host(const void* data, av_dtype t, size_t i) {
    switch (t) {
        case AV_F32: {
            float v;
            std::memcpy(&v, static_cast<const uint8_t*>(data) + 4 * i, 4);
            return v;
        }
        case AV_F16:
        case AV_BF16: {
            uint16_t h;
            std::memcpy(&h, static_cast<const uint8_t*>(data) + 2 * i, 2);
            return t == AV_F16 ? av_f16_to_f32(h) : av_bf16_to_f32(h);
        }
        default: return 0.0f;
    }
}

av_status av_weights::add(const std::string& name, const void* data, av_dtype dtype,
                          const std::vector<int64_t>& shape, bool to_f32, bool keep_host) {
    AV_CHECK(dtype == AV_F32 || dtype == AV_F16 || dtype == AV_BF16,
             "weight " + name + ": dtype must be f32, f16 or bf16");
    AV_CHECK(!shape.empty() && shape.size() <= 4, "weight " + name + ": 1 to 4 dimensions expected");
    av_weight w;
    int64_t ne[4] = {1, 1, 1, 1};
    for (size_t i = 0; i < shape.size(); ++i) ne[i] = shape[shape.size() - 1 - i];
    const av_dtype dt = to_f32 ? AV_F32 : dtype;
    w.t = av_tensor_make(nullptr, dt, ne[0], ne[1], ne[2], ne[3]);
    const size_t n = static_cast<size_t>(av_tensor_nelements(w.t));
    if (to_f32 || keep_host) {
        w.host.resize(n);
        for (size_t i = 0; i < n; ++i) w.host[i] = av_load_host(data, dtype, i);
    }
    AV_TRY(w.buf.alloc(be_, av_tensor_nbytes(w.t)));
    w.t.data = w.buf.data();
    if (to_f32) AV_TRY(be_->upload(w.t.data, w.host.data(), n * sizeof(float)));
    else AV_TRY(be_->upload(w.t.data, data, av_tensor_nbytes(w.t)));
    if (!keep_host) std::vector<float>().swap(w.host);
    map_[name] = std::move(w);
    return av_status::success();
}

void av_weights::put(const std::string& name, av_tensor t, av_buffer&& buf) {
    av_weight w;
    w.t = t;
    w.buf = std::move(buf);
    map_[name] = std::move(w);
}

av_status av_weights::get(const std::string& name, av_tensor* out) const {
    auto it = map_.find(name);
    AV_CHECK(it != map_.end(), "weight " + name + " was not loaded");
    *out = it->second.t;
    return av_status::success();
}

const std::vector<float>* av_weights::host(const std::string& name) const {
    auto it = map_.find(name);
    if (it == map_.end() || it->second.host.empty()) return nullptr;
    return &it->second.host;
}

size_t av_weights::bytes() const {
    size_t s = 0;
    for (const auto& kv : map_) s += kv.second.buf.bytes();
    return s;
}
