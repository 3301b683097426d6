"""The committed fixtures (test/fixtures/pth) are what avtrain.pth_fixtures writes, on any x86 CPU.

The `.pth` files hold seeded random weights drawn in float64 (pth_fixtures.DRAW), which PyTorch
draws the same way at every ATEN_CPU_CAPABILITY: they must regenerate byte for byte, so that the
nesting, the storage sharing, the strides and the dtypes are exactly the generator's.
golden-pth.safetensors holds the reference model's forward outputs on them, which PyTorch's CPU
kernels sum in another order on each SIMD path: compared with test_golden's magnitude-scaled
tolerances (measured: at most 3.1e-6 x max|t| between default, avx2 and avx512; issue 10).
"""

import os

import pytest

from avtrain import pth_fixtures
from avtrain.safetensors_io import load_file
from test_golden import compare

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures", "pth")
PTH = ["varsr-tiny.pth", "vae-plain-tiny.pth", "views.pth", "evil.pth"]
GOLDEN = "golden-pth.safetensors"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("pth")
    pth_fixtures.generate(str(out))
    assert not os.path.exists(pth_fixtures.MARKER)
    return out


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="test/fixtures/pth is not present")
@pytest.mark.parametrize("name", PTH)
def test_regenerated_pth_is_byte_identical(regenerated, name):
    with open(regenerated / name, "rb") as a, open(os.path.join(FIXTURES, name), "rb") as b:
        assert a.read() == b.read(), name


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="test/fixtures/pth is not present")
def test_regenerated_golden_matches(regenerated):
    a, ma = load_file(os.path.join(FIXTURES, GOLDEN))
    b, mb = load_file(str(regenerated / GOLDEN))
    assert ma == mb
    assert sorted(a) == sorted(b)
    assert compare(a, b) == []
