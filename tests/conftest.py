"""Shared fixtures. Tests run on the CPU with tiny models (see
:mod:`mmseg_robust.testing`)."""
import os
import warnings

import pytest
import torch

# one intra-op thread per pytest-xdist worker: the workers already use the
# cores, and oversubscription makes small-tensor code several times slower
if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)

warnings.filterwarnings('ignore', message='.*MultiScaleDeformableAttention.*')


@pytest.fixture
def toy_data(tmp_path_factory):
    """A fresh toy dataset in MMSeg's layout (8 train, 4 val, 32x32)."""
    from mmseg_robust.testing import make_toy_dataset
    return make_toy_dataset(str(tmp_path_factory.mktemp('toy_data')))


@pytest.fixture
def tiny_segmentor():
    """A tiny EncoderDecoder in eval mode with fixed random weights."""
    from mmseg_robust.testing import build_tiny_segmentor
    return build_tiny_segmentor(seed=0)
