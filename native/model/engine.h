// av_engine: one loaded model on one backend, plus the state of the tile batch being upscaled.
// The TypeScript scale loop drives it (src/model/generate.ts):
//   load_tensor() per weight, finalize() once;
//   per batch: prepare() (LR preprocessing, conditioning net, SCA masks, prefix), step(si) for
//   si = 0..K-1 (one scale each: blocks with the KV cache, head, CFG + sampling, VQ
//   accumulation, next scale's input), decode() (VQVAE decoder, postprocessing, colour fix).
// Written only against core/ops.h and av_backend (alloc/upload/download/compute), so every
// backend runs it unchanged. Not thread-safe: calls must not overlap (the session serialises).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "condnet.h"
#include "config.h"
#include "refiner.h"
#include "core/backend.h"
#include "sca.h"
#include "transformer.h"
#include "vqvae.h"
#include "weights.h"

// One batch of LR tiles and its sampling settings (field names equal the JS keys).
struct av_prepare_args {
    int64_t B = 0;
    int64_t lr_h = 0, lr_w = 0;
    std::vector<uint8_t> lr;          // [B, lr_h, lr_w, 3] RGB
    std::vector<int32_t> image_keys;  // [B] sampler key per tile
    uint64_t seed = 0;
    double cfg = 0.0;  // guidance weight; 0 runs without the negative half
    int32_t top_k = 1;
    float top_p = 0.0f;
    bool debug = false;  // keep host copies of intermediates for _debug()
};

enum av_color_fix { AV_COLOR_FIX_NONE = 0, AV_COLOR_FIX_ADAIN = 1, AV_COLOR_FIX_WAVELET = 2 };

struct av_decode_args {
    int32_t color_fix = AV_COLOR_FIX_ADAIN;
    // Residual latent (model metadata latent = "residual"): > 0 turns it on. The output before the
    // clamp is then base + residual_scale * decoder, base = 2 * up01 - 1 in fp32 (up01: the
    // PIL-bicubic upsampled LR in [0, 1], the colour-fix source); 0 (latent "image"): the decoder output.
    float residual_scale = 0.0f;
};

class av_engine {
public:
    av_engine(std::unique_ptr<av_backend> be, av_model_config cfg);
    ~av_engine();

    // Creates the backend and checks the configuration's invariants.
    static av_status create(const std::string& backend, int device, av_model_config cfg,
                            std::unique_ptr<av_engine>* out);

    // Uploads one weight (shape row-major, dtype as stored).
    av_status load_tensor(const std::string& name, const void* data, av_dtype dtype, const std::vector<int64_t>& shape);
    // Resolves every weight, checks backend support, precomputes the per-label AdaLN modulation.
    av_status finalize();

    av_status prepare(const av_prepare_args& a);
    // Runs scale si (must be the next one); idx receives the sampled tokens [B, pn^2].
    av_status step(int64_t si, std::vector<int32_t>* idx);
    // The diffusion refiner (models with one, config refiner_width > 0): f_hat += 0.6 x from
    // the 10-step sampler (spec 6.2), after the last scale and before decode (refiner.cc).
    av_status refine();
    // Decodes the final f_hat: rgb receives [B, S, S, 3] uint8.
    av_status decode(const av_decode_args& a, std::vector<uint8_t>* rgb);
    // A named intermediate as f32 (see engine.cc for the list), row-major shape.
    av_status debug(const std::string& name, std::vector<float>* data, std::vector<int64_t>* shape);

    const av_model_config& config() const { return cfg_; }
    const char* backend_name() const { return be_->name(); }
    size_t weight_bytes() const { return w_.bytes(); }
    size_t state_bytes() const;
    int64_t batch() const { return B_; }
    int64_t next_scale() const { return next_si_; }

private:
    av_status resolve_weights();
    av_status compute_modulation();
    av_status check_support();
    av_status ensure_state(int64_t B);
    av_status build_masks(const av_prepare_args& a);
    av_status download_f32(const void* src, int64_t n, std::vector<float>* out);
    av_status resolve_refiner();
    av_status ensure_refiner_state(int64_t rows);

    std::unique_ptr<av_backend> be_;
    av_model_config cfg_;
    av_weights w_;
    bool finalized_ = false;

    // Resolved weights.
    av_condnet_w cond_;
    std::vector<av_block_w> blocks_;
    av_head_w head_;
    av_sca_w sca_;
    av_decoder_w dec_;
    av_tensor word_w_, word_b_, class_emb_, pos_start_, lvl_embed_, codebook_;
    av_buffer codebook_t_buf_;  // token_mean: E^T [Cv, V], the weight of softmax(G) E
    av_tensor codebook_t_;
    std::vector<av_tensor> phi_w_, phi_b_;
    av_buffer rope_, consts_;  // rope [T, 2]; consts {0, 1}
    int64_t n_label_ = 2;      // label rows of the modulation: 0 and num_classes - 1

    // Batch state, sized for cap_B_ images (2 * cap_B_ rows under CFG).
    int64_t cap_B_ = 0;
    int64_t B_ = 0, R_ = 0;
    int64_t next_si_ = -1;
    av_prepare_args run_;  // sampling settings of the current batch (lr cleared)
    std::vector<av_buffer> kv_k_, kv_v_;  // per layer [R, H, T, D]
    av_buffer x_, h_, qkv_, q_, o_, ff_, logits_, idx_, keys_, f_hat_, codes_, next_, key_bias_, masks_;
    std::vector<int64_t> mask_off_;  // per level: element offset in masks_ (level-major [B, n^2] blocks)
    std::vector<float> up01_;        // [B, 3, S, S] AdaIN source (host)
    av_buffer dec_act_[3], dec_attn_, dec_out_, dec_base_, dec_lr_;

    // The refiner: weights (width 0 = none), per-row scratch for rows = halves * B * G^2.
    av_refiner_w ref_;
    bool refined_ = false;
    int64_t ref_cap_rows_ = 0;
    av_buffer ref_z_, ref_c_, ref_sy_, ref_a_, ref_h_, ref_t_, ref_shift_, ref_scale_, ref_gate_;
    av_buffer ref_xin_, ref_o_, ref_x_, ref_eps_, ref_temb_;
    std::vector<float> dbg_ref_z_, dbg_ref_noise_, dbg_ref_eps_, dbg_ref_x_;

    // Host copies kept for debug().
    std::vector<float> dbg_hr_in_, dbg_lr_tokens_, dbg_prefix_, dbg_sg_, dbg_decoded_;
    int64_t last_lh_ = 0;  // logits rows per image row of the last step
    int64_t last_l_ = 0;   // residual-stream tokens per row of the last step
};
