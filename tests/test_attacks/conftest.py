"""Fixtures of the attack tests (tiny models: :mod:`tests.tiny_models`)."""
import pytest

from ..tiny_models import PixelNet


@pytest.fixture(scope='module')
def net():
    """The default tiny per-pixel model (modules that need another seed
    define their own ``net``)."""
    return PixelNet().eval()
