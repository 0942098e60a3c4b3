"""A failure on one rank of a distributed SEA evaluation ends every rank
with the error, in seconds (docs/evaluation.md, "Distributed").

Two processes of ``tools/test.py --launcher pytorch`` (gloo, CPU) are
started directly, as a launcher that does not stop the other ranks would
(``srun``, ``mpirun``, a second node), each with its own output. The
failures are made with data and config only: a label map only rank 1 sees,
a training set for the class weights that rank 0 cannot build, and an
``SEAMetric`` subclass (imported by the config's ``custom_imports``) that
raises where the environment of one rank says so.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mmengine.config import Config

from ..conftest import load_tool

REPO = Path(__file__).resolve().parents[2]
SEA_ARGS = ['--eval', 'sea', '--eps', '4', '--n-iter', '3']
#: far below the gloo default (30 minutes) that a waiting rank would hit
TIMEOUT = 120

FAILING_METRIC = '''
"""SEAMetric that fails where FAIL_IN (this process's environment) says."""
import os

from mmseg.registry import METRICS

from mmseg_robust.evaluation import SEAMetric


class FailingSEAMetric(SEAMetric):

    def process(self, data_batch, data_samples):
        if os.environ.get('FAIL_IN') == 'process':
            raise RuntimeError('injected failure in process')
        super().process(data_batch, data_samples)

    def compute_metrics(self, results):
        if os.environ.get('FAIL_IN') == 'compute_metrics':
            raise RuntimeError('injected failure in compute_metrics')
        return super().compute_metrics(results)


# tools/test.py --eval sea keeps a test_evaluator of type 'SEAMetric'
METRICS.register_module('SEAMetric', module=FailingSEAMetric, force=True)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_two(args, work, rank_env=({}, {})):
    """Run ``tools/test.py ARGS --launcher pytorch`` as ranks 0 and 1.

    Returns:
        tuple: The exit statuses, the outputs (stdout and stderr) and the
        seconds until both had ended.
    """
    port = str(_free_port())
    procs, logs = [], []
    t0 = time.monotonic()
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE='2',
            LOCAL_WORLD_SIZE='2',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=port,
            OMP_NUM_THREADS='1',
            CUDA_VISIBLE_DEVICES='',
            **rank_env[rank])
        env.pop('MMSEG_ROBUST_DEBUG', None)
        log = open(work / f'rank{rank}.log', 'w')
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable,
                 str(REPO / 'tools' / 'test.py')] + args +
                ['--launcher', 'pytorch'],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT))
    try:
        while time.monotonic() - t0 < TIMEOUT and any(p.poll() is None
                                                      for p in procs):
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    outputs = [(work / f'rank{r}.log').read_text() for r in range(2)]
    return [p.returncode for p in procs], outputs, elapsed


def _last_line(text):
    return text.strip().splitlines()[-1]


def _check_both_failed(codes, outputs, elapsed):
    assert elapsed < TIMEOUT, 'a rank was still waiting:\n' + '\n'.join(
        o[-2000:] for o in outputs)
    assert codes == [1, 1], '\n'.join(o[-3000:] for o in outputs)


@pytest.fixture
def args(trained_tiny, tmp_path):
    return [
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path / 'work')
    ] + SEA_ARGS


@pytest.mark.slow
def test_bad_label_on_rank1_stops_both_ranks_then_resume(
        trained_tiny, args, tmp_path):
    """A label out of range in the image of rank 1's second batch (the
    sampler gives rank 0 images 0 and 2, rank 1 images 1 and 3); then,
    with the label fixed, ``--resume``: rank 0 skips both its batches,
    rank 1 its first, and the numbers equal a one-process run."""
    import cv2
    data = tmp_path / 'data'
    shutil.copytree(trained_tiny['data_root'], data)
    ann = data / 'ann_dir' / 'val' / 'val_003.png'
    good = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    bad = good.copy()
    bad[0, 0] = 7
    cv2.imwrite(str(ann), bad)
    args = args + [
        '--cfg-options', f'test_dataloader.dataset.data_root={data}'
    ]
    codes, outputs, elapsed = _run_two(args, tmp_path)
    _check_both_failed(codes, outputs, elapsed)
    own = _last_line(outputs[1])
    assert own.startswith('error: labels out of range: the label map of '
                          f'{data}/img_dir/val/val_003.png'), outputs[1]
    # rank 0 names rank 1, the batch and the message: one error line too
    assert _last_line(outputs[0]) == own.replace(
        'error: ', 'error: rank 1 failed in batch 1: ', 1), outputs[0]
    assert 'Traceback' not in outputs[0] + outputs[1]
    # both stopped after batch 1; the finished images are kept
    results = tmp_path / 'work' / 'sea'

    def images(rank):  # the first line holds the settings
        lines = (results / f'rank{rank}.jsonl').read_text().splitlines()
        return [json.loads(line)['idx'] for line in lines[1:]]

    assert (images(0), images(1)) == ([0, 2], [1])
    assert not (results / 'summary.json').exists()

    cv2.imwrite(str(ann), good)
    codes, outputs, elapsed = _run_two(args + ['--resume'], tmp_path)
    assert codes == [0, 0], '\n'.join(o[-3000:] for o in outputs)
    assert (images(0), images(1)) == ([0, 2], [1, 3])
    summary = json.loads((results / 'summary.json').read_text())
    assert summary['world_size'] == 2
    one = load_tool('test')(
        args[:2] + ['--work-dir', str(tmp_path / 'one')] + args[4:])
    assert summary['metrics'] == pytest.approx(one)


@pytest.mark.slow
def test_class_weights_failing_on_rank0_stop_both_ranks(args, tmp_path):
    """SEA-2024's class weights are resolved on rank 0 only: here from a
    training set that cannot be built."""
    codes, outputs, elapsed = _run_two(
        args + [
            '--sea-version', '2024', '--cfg-options',
            f'train_dataloader.dataset.data_root={tmp_path}/nope'
        ], tmp_path)
    _check_both_failed(codes, outputs, elapsed)
    expected = ('error: the dataset whose labels give the class weights of '
                'mask_ce_bal could not be built: [Errno 2] No such file or '
                f"directory: '{tmp_path}/nope/img_dir/train'. Fix its "
                'config, or give the weights (--class-weights W1 W2 ... or '
                'image)')
    assert [_last_line(o) for o in outputs] == [expected, expected]


@pytest.fixture
def failing_metric_config(trained_tiny, tmp_path):
    (tmp_path / 'failing_metric.py').write_text(FAILING_METRIC)
    cfg = Config.fromfile(trained_tiny['config'])
    cfg.custom_imports = dict(
        imports=list(cfg.custom_imports['imports']) + ['failing_metric'],
        allow_failed_imports=False)
    path = tmp_path / 'failing_metric_config.py'
    cfg.dump(str(path))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('rank, where', [(0, 'compute_metrics'),
                                         (1, 'process')])
def test_exception_on_one_rank_stops_both_ranks(trained_tiny,
                                                failing_metric_config,
                                                tmp_path, monkeypatch, rank,
                                                where):
    """A bug (not a user error) on one rank: while computing the metrics
    (rank 0 only) or while processing rank 1's first batch."""
    monkeypatch.setenv(
        'PYTHONPATH',
        os.pathsep.join(
            p for p in (str(tmp_path), str(REPO), os.environ.get('PYTHONPATH'))
            if p))
    rank_env = [{}, {}]
    rank_env[rank] = dict(FAIL_IN=where)
    codes, outputs, elapsed = _run_two([
        failing_metric_config, trained_tiny['ckpt'], '--work-dir',
        str(tmp_path / 'work')
    ] + SEA_ARGS, tmp_path, rank_env)
    _check_both_failed(codes, outputs, elapsed)
    own = f'RuntimeError: injected failure in {where}'
    assert own in outputs[rank] and 'Traceback' in outputs[rank]
    other = outputs[1 - rank]
    if where == 'compute_metrics':
        # the same exception on rank 1, said to come from rank 0
        assert own in other and 'raised on rank 0' in other
    else:
        assert ('RankFailure: rank 1 failed in batch 0: ' + own) in other
