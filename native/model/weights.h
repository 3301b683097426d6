// Model weights held once in backend memory, keyed by their safetensors names (which equal
// the reference state-dict keys, spec 8.2, 8.3, 11.7). Matmul and conv weights keep their
// stored dtype (f32, f16 or bf16); every other tensor (biases, norms, embeddings, codebook,
// per-head scalars) is converted to f32 at load, as core/ops.h requires for non-weight
// operands. A few small tensors also keep a host f32 copy for scalars the forward needs on the
// host (sca.gamma, sca.level_embed, per-head temperatures).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/backend.h"

// Backend memory owned by a RAII handle.
class av_buffer {
public:
    av_buffer() = default;
    ~av_buffer() { reset(); }
    av_buffer(const av_buffer&) = delete;
    av_buffer& operator=(const av_buffer&) = delete;
    av_buffer(av_buffer&& o) noexcept : be_(o.be_), ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
    av_buffer& operator=(av_buffer&& o) noexcept {
        if (this != &o) {
            reset();
            be_ = o.be_;
            ptr_ = o.ptr_;
            bytes_ = o.bytes_;
            o.ptr_ = nullptr;
        }
        return *this;
    }

    // Frees any previous allocation, then allocates `bytes` on `be`.
    av_status alloc(av_backend* be, size_t bytes);
    void reset();
    void* data() const { return ptr_; }
    size_t bytes() const { return ptr_ ? bytes_ : 0; }

private:
    av_backend* be_ = nullptr;
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

struct av_weight {
    av_tensor t;              // view of buf with ne = reversed stored shape
    av_buffer buf;
    std::vector<float> host;  // f32 host copy, when kept
};

class av_weights {
public:
    explicit av_weights(av_backend* be) : be_(be) {}

    // Uploads one tensor of `shape` (row-major) and stored dtype. to_f32 converts on the host
    // first; keep_host also keeps an f32 host copy. Replaces a tensor of the same name.
    av_status add(const std::string& name, const void* data, av_dtype dtype, const std::vector<int64_t>& shape,
                  bool to_f32, bool keep_host);
    // Registers a tensor computed at load time (takes ownership of buf).
    void put(const std::string& name, av_tensor t, av_buffer&& buf);

    bool has(const std::string& name) const { return map_.count(name) != 0; }
    // The tensor, or an AV_ERR_INVALID status naming the missing weight.
    av_status get(const std::string& name, av_tensor* out) const;
    // The host copy, or null when absent.
    const std::vector<float>* host(const std::string& name) const;
    void erase(const std::string& name) { map_.erase(name); }
    size_t bytes() const;
    size_t count() const { return map_.size(); }
    void clear() { map_.clear(); }

private:
    av_backend* be_;
    std::map<std::string, av_weight> map_;
};
