"""Checkpoint loading stays safe under torch >= 2.6: mmengine's own
checkpoints load with weights_only=True (allow-list), anything else is
refused unless the file is marked trusted."""
import os
import pickle
import subprocess
import sys
import warnings
from argparse import Namespace

import pytest
import torch
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import mmseg_robust  # noqa: F401
from mmseg_robust.compat import checkpoint as ckpt_compat
from mmseg_robust.compat import compat_status
from mmseg_robust.compat.checkpoint import (ENV_TRUST, UnsafeCheckpointError,
                                            trust_checkpoints)
from mmseg_robust.testing import tiny_runner_cfg
from ..conftest import load_tool

NEW_TORCH = ckpt_compat._torch_version() >= (2, 6)
needs_patch = pytest.mark.skipif(
    not NEW_TORCH, reason='torch < 2.6: mmengine unpickles, no patch')


class _WritesFile:
    """A pickle payload: unpickling it creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f'open({self.path!r}, "w").close()', ))


@pytest.fixture
def trained(tmp_path, toy_data):
    """A tiny model trained for 2 iterations with a checkpoint saved."""
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'), toy_data, max_iters=2, checkpoint_interval=2)
    cfg['experiment_name'] = f'ckpt_{tmp_path.name}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return cfg, tmp_path / 'work' / 'iter_2.pth'


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint whose unpickling would create ``marker``."""
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'crafted.pth'
    torch.save(
        {
            'state_dict': {
                'w': torch.ones(2)
            },
            'meta': _WritesFile(marker)
        }, path)
    assert not marker.exists()
    return path, marker


@needs_patch
def test_patch_is_applied_and_plain_torch_refuses_mmengine_checkpoint(trained):
    """Documents why the patch exists: torch's default refuses the file."""
    _, path = trained
    assert compat_status()['checkpoint'].startswith('applied')
    assert CheckpointLoader._schemes[''] is ckpt_compat.load_from_local
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_mmengine_checkpoint_loads_safely(trained, monkeypatch):
    """No trust needed, no warning: the allow-list covers what mmengine
    writes (message hub history buffers, numpy arrays and scalars)."""
    _, path = trained
    monkeypatch.delenv(ENV_TRUST, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert {'meta', 'state_dict', 'message_hub', 'optimizer'} <= set(ckpt)
    assert ckpt['meta']['iter'] == 2
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(loss).__name__ == 'HistoryBuffer'
    assert len(loss.data[0]) > 0 and loss.statistics('mean') > 0


@needs_patch
def test_allow_list_covers_exactly_what_mmengine_writes(trained):
    """Everything beyond torch's defaults in a real mmengine checkpoint is
    on the allow-list, and the allow-list has no general-purpose callable
    (getattr is restricted to HistoryBuffer's statistics methods)."""
    _, path = trained
    found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert set(found) <= ckpt_compat._allowed_names()
    from mmengine.logging import HistoryBuffer
    safe_getattr = ckpt_compat._history_buffer_method
    assert safe_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        safe_getattr(os, 'system')
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        safe_getattr(HistoryBuffer, '__init__')


@needs_patch
def test_crafted_checkpoint_is_refused_and_runs_nothing(
        crafted, tmp_path, monkeypatch):
    path, marker = crafted
    monkeypatch.delenv(ENV_TRUST, raising=False)
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path))
    message = str(info.value)
    assert message.startswith('error: checkpoint')
    assert 'builtins.exec' in message  # what was refused
    assert ENV_TRUST in message and '--trust-checkpoint' in message
    assert not marker.exists()
    # the same through a Runner's load_from
    with pytest.raises(UnsafeCheckpointError):
        from mmengine.runner.checkpoint import load_checkpoint

        from mmseg_robust.testing import build_tiny_segmentor
        load_checkpoint(build_tiny_segmentor(), str(path))
    assert not marker.exists()


@needs_patch
def test_opt_in_by_environment_variable(tmp_path, monkeypatch):
    """A research checkpoint with an argparse.Namespace inside: refused,
    then loaded once its path is listed, with a warning naming it."""
    path = tmp_path / 'with_args.pth'
    torch.save({
        'state_dict': {
            'w': torch.ones(1)
        },
        'args': Namespace(lr=0.1)
    }, path)
    monkeypatch.delenv(ENV_TRUST, raising=False)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        _load_checkpoint(str(path))
    monkeypatch.setenv(
        ENV_TRUST, os.pathsep.join([str(tmp_path / 'other.pth'),
                                    str(path)]))
    with pytest.warns(UserWarning, match=f'{path}.*fully unpickled'):
        ckpt = _load_checkpoint(str(path))
    assert ckpt['args'].lr == 0.1
    monkeypatch.setenv(ENV_TRUST, str(tmp_path / 'other.pth'))
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path))
    monkeypatch.setenv(ENV_TRUST, '*')
    assert _load_checkpoint(str(path))['args'].lr == 0.1


@needs_patch
def test_opt_in_by_api_really_unpickles(crafted, monkeypatch):
    path, marker = crafted
    monkeypatch.delenv(ENV_TRUST, raising=False)
    with trust_checkpoints(str(path)):
        _load_checkpoint(str(path))
    assert marker.exists()  # trusted means fully unpickled
    marker.unlink()
    with pytest.raises(UnsafeCheckpointError):  # trust ended with the block
        _load_checkpoint(str(path))
    assert not marker.exists()


@needs_patch
def test_train_tool_refuses_then_trusts(crafted, tiny_config, tmp_path,
                                        monkeypatch):
    """tools/train.py: a crafted --resume file stops with the error;
    --trust-checkpoint is the opt-in."""
    path, marker = crafted
    monkeypatch.delenv(ENV_TRUST, raising=False)
    monkeypatch.setattr(ckpt_compat, '_trusted', set())  # undone after
    main = load_tool('train')
    args = [
        str(tiny_config), '--work-dir',
        str(tmp_path / 'w'), '--resume',
        str(path)
    ]
    with pytest.raises(
            SystemExit,
            match='error: checkpoint .* was not '
            'loaded: .*--trust-checkpoint'):
        main(args)
    assert not marker.exists()
    # trusted: unpickled (the payload ran), then mmengine finds no
    # optimizer state in it -- the point is that the file was read
    with pytest.raises(Exception) as info:
        main(args + ['--trust-checkpoint', str(path)])
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert marker.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='can not be found'):
        ckpt_compat.load_from_local(str(tmp_path / 'nope.pth'))


def test_not_needed_on_old_torch(monkeypatch):
    monkeypatch.setattr(torch, '__version__', '2.5.1')
    assert 'weights_only=False' in ckpt_compat.needed()


def test_resume_continues_training(trained):
    cfg, path = trained
    cfg = dict(cfg)
    cfg['train_cfg'] = dict(cfg['train_cfg'], max_iters=4, val_interval=4)
    cfg['resume'] = True
    cfg['load_from'] = str(path)
    cfg['experiment_name'] = cfg['experiment_name'] + '_resumed'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    resumed = _load_checkpoint(
        str(path.parent / 'iter_4.pth'), map_location='cpu')
    assert resumed['meta']['iter'] == 4
    # the optimizer state came back from the checkpoint (momentum buffers)
    assert resumed['optimizer']['state']


NUMPY1_CKPT = """
import sys, numpy as np, torch
# what a numpy-1 mmengine checkpoint holds: arrays and scalars pickled under
# numpy.core.multiarray (numpy 2 writes numpy._core.multiarray)
from mmengine.logging import HistoryBuffer
buf = HistoryBuffer([1.0, 2.0], [1, 1])
torch.save({'message_hub': {'log_scalars': {'loss': buf}},
            'eta': np.float64(1.5)}, sys.argv[1])
"""


@needs_patch
def test_checkpoint_of_the_other_numpy_major_loads(tmp_path):
    """The allow-list names numpy's arrays under both module paths: rewrite
    a checkpoint's pickle to the other numpy major's names and load it."""
    import zipfile
    src, dst = tmp_path / 'a.pth', tmp_path / 'b.pth'
    res = subprocess.run([sys.executable, '-c', NUMPY1_CKPT,
                          str(src)],
                         capture_output=True,
                         text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    import numpy as np
    here = 'numpy._core' if np.__version__ >= '2' else 'numpy.core'
    other = 'numpy.core' if here == 'numpy._core' else 'numpy._core'
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data.pkl'):
                assert here.encode() in data
                data = data.replace(here.encode() + b'.multiarray',
                                    other.encode() + b'.multiarray')
            zout.writestr(item, data)
    ckpt = _load_checkpoint(str(dst))
    assert ckpt['eta'] == 1.5
    assert ckpt['message_hub']['log_scalars']['loss'].mean() == 1.5


@pytest.fixture
def tiny_config(tmp_path, toy_data):
    from mmengine.config import Config
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'), toy_data, max_iters=2, checkpoint_interval=1)
    path = tmp_path / 'tiny.py'
    Config(cfg).dump(str(path))
    return path
