"""Loading mmengine checkpoints under torch >= 2.6 (weights_only=True)."""
import pickle

import pytest
import torch
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

import mmseg_robust  # noqa: F401
from mmseg_robust.compat import checkpoint as ckpt_compat
from mmseg_robust.testing import tiny_runner_cfg


@pytest.fixture
def trained(tmp_path, toy_data):
    """A tiny model trained for 2 iterations with a checkpoint saved."""
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'), toy_data, max_iters=2, checkpoint_interval=2)
    cfg['experiment_name'] = f'ckpt_{tmp_path.name}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return cfg, tmp_path / 'work' / 'iter_2.pth'


def test_plain_torch_load_refuses_mmengine_checkpoint(trained):
    """Documents why the fix exists: torch's default refuses the file."""
    _, path = trained
    if torch.__version__ < '2.6':
        pytest.skip('torch < 2.6 loads with weights_only=False by default')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_mmengine_loader_reads_full_checkpoint(trained):
    _, path = trained
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert {'meta', 'state_dict', 'message_hub', 'optimizer'} <= set(ckpt)
    assert ckpt['meta']['iter'] == 2


def test_plain_weight_files_load_safely_without_fallback(tmp_path,
                                                         monkeypatch):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, path)
    monkeypatch.setenv('MMSEG_ROBUST_WEIGHTS_ONLY', '1')
    ckpt = _load_checkpoint(str(path))
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


def test_strict_mode_refuses_pickled_objects(trained, monkeypatch):
    _, path = trained
    monkeypatch.setenv('MMSEG_ROBUST_WEIGHTS_ONLY', '1')
    with pytest.raises(pickle.UnpicklingError,
                       match='MMSEG_ROBUST_WEIGHTS_ONLY'):
        _load_checkpoint(str(path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='can not be found'):
        ckpt_compat.load_from_local(str(tmp_path / 'nope.pth'))


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
