"""The committed .pth fixtures (test/fixtures/pth) are exactly what avtrain.pth_fixtures writes."""

import os

import pytest

from avtrain import pth_fixtures

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures", "pth")
NAMES = ["varsr-tiny.pth", "vae-plain-tiny.pth", "views.pth", "evil.pth", "golden-pth.safetensors"]


@pytest.mark.skipif(not os.path.isdir(FIXTURES), reason="test/fixtures/pth is not present")
def test_regenerated_fixtures_are_byte_identical(tmp_path):
    pth_fixtures.generate(str(tmp_path))
    assert not os.path.exists(pth_fixtures.MARKER)
    for name in NAMES:
        with open(tmp_path / name, "rb") as a, open(os.path.join(FIXTURES, name), "rb") as b:
            assert a.read() == b.read(), name
