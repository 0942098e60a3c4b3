"""tools/train.py: train, resume, and errors (the MMSeg command line)."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

from mmseg_robust.testing import tiny_runner_cfg
from ..conftest import load_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_config(tmp_path, toy_data):
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'), toy_data, max_iters=2, checkpoint_interval=1)
    cfg['log_level'] = 'INFO'
    path = tmp_path / 'tiny.py'
    Config(cfg).dump(str(path))
    return path


def test_train_two_iterations_then_resume_in_a_fresh_process(
        tiny_config, tmp_path):
    """What a user types: train, then continue with --resume."""
    work = tmp_path / 'cli_work'
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'train.py'),
        str(tiny_config), '--work-dir',
        str(work)
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (work / 'iter_2.pth').is_file()
    resumed = subprocess.run(
        cmd + ['--resume', '--cfg-options', 'train_cfg.max_iters=4'],
        capture_output=True,
        text=True,
        timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [4/4]' in log
    assert (work / 'iter_4.pth').is_file()


def test_resume_from_a_given_checkpoint(tiny_config, tmp_path):
    main = load_tool('train')
    work = tmp_path / 'work2'
    main([
        str(tiny_config), '--work-dir',
        str(work), '--cfg-options', f'experiment_name=a{time.time()}'
    ])
    main([
        str(tiny_config), '--work-dir',
        str(work), '--resume',
        str(work / 'iter_1.pth'), '--cfg-options', 'train_cfg.max_iters=3',
        f'experiment_name=b{time.time()}'
    ])
    assert (work / 'iter_3.pth').is_file()


def test_errors(tiny_config, tmp_path):
    main = load_tool('train')
    with pytest.raises(SystemExit, match='does not exist'):
        main([str(tmp_path / 'missing.py')])
    with pytest.raises(SystemExit, match='does not exist'):
        main([str(tiny_config), '--resume', str(tmp_path / 'nope.pth')])
    cfg = Config.fromfile(str(tiny_config))
    cfg.optim_wrapper.type = 'ApexOptimWrapper'
    other = tmp_path / 'other.py'
    cfg.dump(str(other))
    with pytest.raises(SystemExit, match='--amp only works'):
        main([str(other), '--amp'])
