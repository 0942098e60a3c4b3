"""Shared fixtures. Tests run on the CPU with tiny models (see
:mod:`mmseg_robust.testing`)."""
import os
import warnings

import pytest
import torch

import mmseg_robust

# the suite uses MMSeg: register the plugin (and apply its compatibility
# patches) explicitly, as a user's script does (mmseg_robust._plugin)
mmseg_robust.register_all_modules()

# one intra-op thread per pytest-xdist worker: the workers already use the
# cores, and oversubscription makes small-tensor code several times slower
if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)

warnings.filterwarnings('ignore', message='.*MultiScaleDeformableAttention.*')


def scratch_assay_sample_or_skip() -> str:
    """The demo's data file (the scratch-assay TIFF of ndev-sampledata),
    found the way :mod:`mmseg_robust.datasets.scratch_assay` finds it: by
    the package's installed location, without importing it (its
    ``__init__`` needs bioio, which ``make install`` deliberately leaves out
    by installing it with ``--no-deps``). Skips only where ndev-sampledata
    is not installed at all; ``make install`` (and so CI) installs it. An
    installed package without the file fails."""
    from mmseg_robust.datasets.scratch_assay import _sample_path
    try:
        return _sample_path()
    except ImportError as err:
        pytest.skip(
            f'{err} (make install installs it)', allow_module_level=True)


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module of tiny models: they gain nothing
    from threads, and on a shared 2-core machine the threads' synchronisation
    makes them many times slower. Use with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def interrupt_after(monkeypatch, batches: int, run) -> None:
    """Run ``run()`` with ``SEATestLoop`` interrupted (KeyboardInterrupt)
    when it starts batch ``batches + 1``, then restore the loop."""
    from mmseg_robust.evaluation import SEATestLoop
    calls = {'n': 0}
    original = SEATestLoop.attack_batch

    def interrupted(self, data, keys):
        calls['n'] += 1
        if calls['n'] == batches + 1:
            raise KeyboardInterrupt
        return original(self, data, keys)

    monkeypatch.setattr(SEATestLoop, 'attack_batch', interrupted)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(SEATestLoop, 'attack_batch', original)


def load_tool(name: str):
    """The ``main`` function of ``tools/<name>.py`` (run in-process)."""
    import runpy
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'tools' / f'{name}.py'
    return runpy.run_path(str(path), run_name='tool_' + name)['main']


@pytest.fixture(scope='session')
def trained_tiny(tmp_path_factory):
    """A tiny segmentor trained for 60 iterations on the toy dataset.

    Returns:
        dict: ``config`` (path of a dumped config with test set), ``ckpt``,
        ``data_root``, ``cfg`` (the config dict).
    """
    import time

    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmseg_robust.testing import make_toy_dataset, tiny_runner_cfg
    root = tmp_path_factory.mktemp('trained_tiny')
    data = make_toy_dataset(str(root / 'data'), n_train=16, n_val=4)
    cfg = tiny_runner_cfg(
        str(root / 'train'),
        data,
        max_iters=60,
        batch_size=4,
        lr=0.05,
        checkpoint_interval=60,
        val_interval=10**6)  # never validate
    cfg['experiment_name'] = f'trained_tiny_{time.time()}'
    Runner.from_cfg(cfg).train()
    test_cfg = dict(cfg)
    test_cfg.pop('experiment_name')
    test_cfg['work_dir'] = str(root / 'test')
    path = str(root / 'tiny_config.py')
    Config(test_cfg).dump(path)
    return dict(
        config=path,
        ckpt=str(root / 'train' / 'iter_60.pth'),
        data_root=data,
        cfg=test_cfg,
        root=root)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA device; they are skipped without
    one (``make test`` stays green on a CPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)
