"""Checkpoint loading is safe on every supported torch: mmengine's own
checkpoints load unpickling only tensors, plain containers and an
allow-list (torch >= 2.5: weights_only=True with it; torch 2.1 - 2.4: a
restricted unpickler), anything else -- TorchScript archives included -- is
refused unless the file is marked trusted.

Both loading methods are tested in every environment: the one the running
torch uses through mmengine, and the restricted unpickler also directly
(it runs on any torch)."""
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

#: torch.load's default: weights_only=True since torch 2.6
WEIGHTS_ONLY_DEFAULT = ckpt_compat._torch_version() >= (2, 6)


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


def test_patch_is_applied_and_why(trained, crafted):
    """Documents why the patch exists on every torch: since 2.6 torch's
    default refuses mmengine's checkpoints; before, it runs what a file
    holds (and weights_only=True, which takes no allow-list before 2.5,
    refuses mmengine's checkpoints too)."""
    _, path = trained
    assert compat_status()['checkpoint'].startswith('applied')
    assert CheckpointLoader._schemes[''] is ckpt_compat.load_from_local
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    if WEIGHTS_ONLY_DEFAULT:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path)
    else:
        crafted_path, marker = crafted
        torch.load(crafted_path)  # mmengine's own loader does this
        assert marker.exists()


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


def test_allow_list_covers_exactly_what_mmengine_writes(trained):
    """Everything beyond torch's defaults in a real mmengine checkpoint is
    on the allow-list, and the allow-list has no general-purpose callable
    (getattr is restricted to HistoryBuffer's statistics methods,
    _codecs.encode to latin1 strings)."""
    _, path = trained
    found = ckpt_compat.unsafe_globals_in_checkpoint(str(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in found
    assert set(found) <= ckpt_compat._allowed_names()
    if hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'):
        # the scanner finds what torch's own finds (torch >= 2.5)
        assert found == sorted(
            torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    from mmengine.logging import HistoryBuffer
    safe_getattr = ckpt_compat._history_buffer_method
    assert safe_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        safe_getattr(os, 'system')
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        safe_getattr(HistoryBuffer, '__init__')
    encode = ckpt_compat._latin1_encode
    assert encode('a\xff', 'latin1') == b'a\xff'
    with pytest.raises(pickle.UnpicklingError, match='refused _codecs'):
        encode('a', 'rot13')
    with pytest.raises(pickle.UnpicklingError, match='refused _codecs'):
        encode(b'a', 'latin1')


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


@pytest.mark.parametrize('version,why',
                         [('2.1.2', 'runs any code stored in a checkpoint'),
                          ('2.5.1', 'runs any code stored in a checkpoint'),
                          ('2.6.0', "refuses mmengine's own checkpoints"),
                          ('2.14.1', "refuses mmengine's own checkpoints")])
def test_needed_on_every_supported_torch(version, why, monkeypatch):
    """The loader is replaced whatever the torch: before 2.6 mmengine's own
    loader fully unpickles, since 2.6 it refuses mmengine's checkpoints."""
    from mmengine.runner import checkpoint as mm_ckpt

    # mmengine's own loader, as before the patch (register_scheme replaces
    # the dict, so the original one comes back afterwards)
    monkeypatch.setattr(
        CheckpointLoader, '_schemes',
        dict(CheckpointLoader._schemes, **{'': mm_ckpt.load_from_local}))
    monkeypatch.setattr(torch, '__version__', version)
    assert ckpt_compat.needed() is None
    message = ckpt_compat.apply()
    assert CheckpointLoader._schemes[''] is ckpt_compat.load_from_local
    assert message.startswith(f'torch {version} loads with') and why in message
    # a loader someone else registered is left alone
    CheckpointLoader._schemes[''] = lambda f, m: None
    assert 'left alone' in ckpt_compat.needed()


def test_loading_method_follows_what_torch_offers():
    has_allow_lists = hasattr(torch.serialization, 'safe_globals')
    assert ckpt_compat.loading_method() == ('weights_only' if has_allow_lists
                                            else 'restricted_unpickler')
    if ckpt_compat._torch_version() >= (2, 5):
        assert has_allow_lists


def _restricted_load(path):
    """The restricted unpickler directly (the method of torch 2.1 - 2.4),
    whatever this torch is."""
    return torch.load(
        str(path),
        pickle_module=ckpt_compat._restricted_pickle_module(),
        weights_only=False)


def test_restricted_unpickler_loads_mmengine_checkpoints(trained):
    _, path = trained
    ckpt = _restricted_load(path)
    assert ckpt['meta']['iter'] == 2
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(loss).__name__ == 'HistoryBuffer' and loss.mean() > 0
    reference = torch.load(str(path), weights_only=False)
    for key, value in reference['state_dict'].items():
        assert torch.equal(ckpt['state_dict'][key], value), key


def test_restricted_unpickler_imports_nothing_else(crafted, tmp_path):
    """A payload through GLOBAL (protocol 2, as torch.save writes),
    STACK_GLOBAL (protocol 4) and in the legacy, non-zip format: refused,
    nothing runs; a numpy object array is refused too."""
    import numpy as np
    path, marker = crafted
    with pytest.raises(
            pickle.UnpicklingError,
            match='GLOBAL builtins.exec was not an allowed'):
        _restricted_load(path)
    for name, kwargs in (('p4.pth', dict(pickle_protocol=4)),
                         ('legacy.pth',
                          dict(_use_new_zipfile_serialization=False))):
        other = tmp_path / name
        torch.save({'x': _WritesFile(marker)}, other, **kwargs)
        with pytest.raises(pickle.UnpicklingError, match='builtins.exec'):
            _restricted_load(other)
    assert not marker.exists()
    objects = tmp_path / 'objects.pth'
    torch.save({'a': np.array([1, 'x'], dtype=object)}, objects)
    with pytest.raises(pickle.UnpicklingError, match='object arrays'):
        _restricted_load(objects)
    # numpy arrays and scalars of numbers do load
    plain = tmp_path / 'plain.pth'
    torch.save({'a': np.arange(3.), 'b': np.int64(4)}, plain)
    loaded = _restricted_load(plain)
    assert loaded['a'].tolist() == [0., 1., 2.] and loaded['b'] == 4


def test_scanner_finds_every_kind_of_global(crafted, tmp_path):
    path, _ = crafted
    assert 'builtins.exec' in ckpt_compat.unsafe_globals_in_checkpoint(
        str(path))
    p4 = tmp_path / 'p4.pth'
    torch.save({'x': _WritesFile(tmp_path / 'm')}, p4, pickle_protocol=4)
    assert 'builtins.exec' in ckpt_compat.globals_in_checkpoint(str(p4))
    with pytest.raises(ValueError, match='not a zip checkpoint or a pickle'):
        ckpt_compat.globals_in_checkpoint(__file__)


@pytest.mark.parametrize('method', ['this torch', 'restricted_unpickler'])
def test_refused_through_mmengine_with_either_method(method, crafted, tmp_path,
                                                     monkeypatch):
    """Through mmengine's loader: this torch's method, and the restricted
    unpickler forced (what torch 2.1 - 2.4 use); protocol 4 and the
    legacy format too."""
    path, marker = crafted
    if method == 'restricted_unpickler':
        monkeypatch.setattr(ckpt_compat, 'loading_method',
                            lambda: 'restricted_unpickler')
    monkeypatch.delenv(ENV_TRUST, raising=False)
    legacy = tmp_path / 'legacy.pth'
    torch.save({'meta': _WritesFile(marker)},
               legacy,
               _use_new_zipfile_serialization=False)
    p4 = tmp_path / 'p4.pth'
    torch.save({'meta': _WritesFile(marker)}, p4, pickle_protocol=4)
    for bad in (path, legacy, p4):
        with pytest.raises(UnsafeCheckpointError, match='builtins.exec'):
            _load_checkpoint(str(bad))
    assert not marker.exists()


@pytest.fixture
def torchscript(tmp_path):
    path = tmp_path / 'scripted.pt'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit is deprecated in 2.14
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


def test_torchscript_archive_is_refused(torchscript, monkeypatch):
    """torch.load hands a TorchScript archive to torch.jit.load, before
    torch 2.6 even with weights_only=True (CVE-2025-32434): refused before
    torch.load sees it, on every torch; loaded only when trusted."""
    calls = []
    jit_load = torch.jit.load

    def spy(*args, **kwargs):
        calls.append(args)
        return jit_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, 'load', spy)
    monkeypatch.delenv(ENV_TRUST, raising=False)
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(torchscript))
    message = str(info.value)
    assert message.startswith(f'error: checkpoint {torchscript} was not '
                              'loaded: it is a TorchScript archive')
    assert ENV_TRUST in message and '--trust-checkpoint' in message
    assert calls == []
    with trust_checkpoints(str(torchscript)):
        with pytest.warns(UserWarning, match='fully unpickled'):
            module = _load_checkpoint(str(torchscript))
    assert len(calls) == 1
    assert module(torch.ones(1, 2)).shape == (1, 2)


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
