import math

import pytest
import torch

from avtrain.config import (
    PATCH_NUMS_256, ModelConfig, config_from_metadata, config_to_metadata, d24, phi_index,
    preset, rope_coordinates, rope_frequencies, small, small512, tiny,
)


def test_d24_layout_matches_spec_1_3():
    cfg = d24()
    assert cfg.hr_size == 512 and cfg.lr_size == 128 and cfg.grid == 32
    assert cfg.L == 2240 and cfg.first_l == 1025 and cfg.T == 3264
    assert cfg.token_offsets == [0, 1, 5, 14, 30, 66, 147, 316, 640, 1216]
    assert cfg.begin_ends == [(0, 1025), (1025, 1029), (1029, 1038), (1038, 1054), (1054, 1090),
                              (1090, 1171), (1171, 1340), (1340, 1664), (1664, 2240), (2240, 3264)]
    lvl = cfg.level_of_position
    assert len(lvl) == 3264 and lvl[1024] == 0 and lvl[1025] == 1 and lvl[2239] == 8 and lvl[2240] == 9


def test_256_schedule_layout():
    cfg = tiny()
    assert cfg.patch_nums == PATCH_NUMS_256
    assert (cfg.hr_size, cfg.lr_size, cfg.grid) == (256, 64, 16)
    assert cfg.L == 680 and cfg.first_l == 257 and cfg.T == 936
    assert cfg.begin_ends[-1] == (680, 936)


@pytest.mark.parametrize("make", [d24, tiny, small, small512])
def test_metadata_round_trip(make):
    cfg = make()
    meta = config_to_metadata(cfg)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert meta["format"] == "alignvar"
    assert meta["patch_nums"] == ",".join(str(p) for p in cfg.patch_nums)
    assert meta["sca"] == "1"
    assert config_from_metadata(meta) == cfg
    assert config_from_metadata(config_to_metadata(cfg.replace(sca=False))).sca is False


def test_config_validation_rejects_bad_values():
    with pytest.raises(ValueError):
        ModelConfig(width=100, heads=3)
    with pytest.raises(ValueError):
        ModelConfig(width=96, heads=16)  # head dim 6 is not a multiple of 4
    with pytest.raises(ValueError):
        ModelConfig(patch_nums=(1, 3, 2))
    with pytest.raises(ValueError):
        ModelConfig(vq_ch=16, vq_ch_mult=(1, 1, 2, 2, 4))
    with pytest.raises(ValueError):
        preset("huge")


def test_phi_table_spec_5_4():
    # spec 5.4: hard-coded table for K = 10 and 4 Phi convs (ties at si = 2 and 7 by float64)
    assert [phi_index(si, 10, 4) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    # other counts use linspace(1/2n, 1 - 1/2n, n)
    assert [phi_index(si, 10, 1) for si in range(10)] == [0] * 10
    assert phi_index(0, 10, 10) == 0 and phi_index(9, 10, 10) == 9


def test_rope_coordinates_spec_4_2():
    cfg = d24()
    pos = rope_coordinates(cfg)
    assert pos.shape == (3264, 2) and pos.dtype == torch.float32
    # LR grid: integer (r, c)
    assert pos[33].tolist() == [1.0, 1.0]
    # class token: identity rotation
    assert pos[1024].tolist() == [0.0, 0.0]
    # scale 2 (pn = 3) block [1029, 1038): rows {0, 10.667, 21.333}
    tx = pos[1029:1038, 0].reshape(3, 3)[:, 0]
    assert torch.allclose(tx, torch.tensor([0.0, 32 / 3, 64 / 3]), atol=1e-5)
    assert abs(pos[1029 + 3, 0].item() - 10.667) < 1e-3
    # scale 8 (pn = 24): multiples of 4/3
    ty = pos[1664:1688, 1]
    assert torch.allclose(ty, torch.arange(24) * (4 / 3), atol=1e-5)
    freqs = rope_frequencies(64, 10000.0)
    assert freqs.shape == (16,)
    assert torch.allclose(freqs, torch.tensor([10000.0 ** (-i / 16) for i in range(16)]), rtol=1e-6)


def test_rope_coordinates_use_last_grid():
    cfg = tiny()
    pos = rope_coordinates(cfg)
    b0, b1 = cfg.begin_ends[4]  # pn = 5 on the 16 grid
    assert torch.allclose(pos[b0:b1, 0].reshape(5, 5)[:, 0], torch.arange(5) / 5 * 16)
    assert math.isclose(pos[:256, 1].max().item(), 15.0)
