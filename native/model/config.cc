#include "config.h"

av_status av_model_config_check(av_model_config* c) {
    AV_CHECK(c->depth >= 1 && c->width >= 1 && c->heads >= 1 && c->mlp_hidden >= 1,
             "config: depth, width, heads and mlp_hidden must be positive");
    AV_CHECK(c->width % c->heads == 0 && (c->width / c->heads) % 4 == 0,
             "config: width / heads must be an integer multiple of 4");
    AV_CHECK(c->refiner_width >= 0 && c->refiner_blocks >= 0 && (c->refiner_width == 0) == (c->refiner_blocks == 0),
             "config: refiner_width and refiner_blocks must both be positive (a refiner) or both 0");
    AV_CHECK(c->vocab >= 1 && c->cvae >= 1 && c->num_classes >= 2, "config: vocab, cvae >= 1 and num_classes >= 2");
    AV_CHECK(c->patch_nums.size() >= 2 && c->patch_nums[0] == 1, "config: patch_nums must start at 1 with >= 2 scales");
    for (size_t i = 1; i < c->patch_nums.size(); ++i)
        AV_CHECK(c->patch_nums[i] > c->patch_nums[i - 1], "config: patch_nums must be strictly increasing");
    AV_CHECK(c->cond_ch.size() >= 2, "config: cond_ch needs >= 2 entries");
    AV_CHECK(c->vq_ch >= 1 && c->vq_ch_mult.size() >= 1 && c->vq_num_res >= 0, "config: invalid VQVAE sizes");
    for (int64_t m : c->vq_ch_mult)
        AV_CHECK(m >= 1 && (c->vq_ch * m) % AV_VQ_GROUPS == 0, "config: VQVAE channels must be divisible by 32");
    AV_CHECK(c->cond_ch.size() == c->vq_ch_mult.size(),
             "config: the conditioning net and the VQVAE must downsample by the same factor");
    AV_CHECK(c->n_phi >= 1, "config: n_phi must be >= 1");

    c->K = static_cast<int64_t>(c->patch_nums.size());
    c->grid = c->patch_nums.back();
    c->prefix_len = c->grid * c->grid + 1;
    c->head_dim = c->width / c->heads;
    c->hr_size = c->grid << (c->vq_ch_mult.size() - 1);
    c->token_offsets.clear();
    c->seq_begin.clear();
    c->seq_end.clear();
    int64_t total = 0;
    for (int64_t pn : c->patch_nums) {
        c->token_offsets.push_back(total);
        total += pn * pn;
    }
    c->seq_len = c->prefix_len + total - 1;
    for (int64_t si = 0; si < c->K; ++si) {
        const int64_t pn = c->patch_nums[si];
        const int64_t b = si == 0 ? 0 : c->prefix_len - 1 + c->token_offsets[si];
        c->seq_begin.push_back(b);
        c->seq_end.push_back(si == 0 ? c->prefix_len : b + pn * pn);
    }
    AV_CHECK(static_cast<int64_t>(c->rope.size()) == 2 * c->seq_len,
             "config: rope must hold [seq_len, 2] = " + std::to_string(2 * c->seq_len) + " values");
    AV_CHECK(static_cast<int64_t>(c->phi_index.size()) == c->K, "config: phi_index must hold K entries");
    for (int64_t si = 0; si + 1 < c->K; ++si)
        AV_CHECK(c->phi_index[si] >= 0 && c->phi_index[si] < c->n_phi, "config: phi_index out of range");
    return av_status::success();
}
