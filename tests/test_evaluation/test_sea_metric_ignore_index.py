"""SEAMetric's own ignore_index is the one SEATestLoop attacks, checks
labels and computes areas with; a loop given another one refuses to start.
The protocol and norm of the tables come with the loop's data."""
import json
import runpy
import time
from pathlib import Path

import pytest
from mmengine.runner import Runner

from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation import SEAMetric
from mmseg_robust.evaluation.loops.sea_checks import resolve_ignore_index
from mmseg_robust.testing import (build_tiny_segmentor, make_toy_dataset,
                                  tiny_runner_cfg)

REPO = Path(__file__).resolve().parents[2]


def _cfg(work_dir, data_root, loop=None, metric=None):
    cfg = tiny_runner_cfg(str(work_dir), data_root)
    cfg['experiment_name'] = f'sea_ignore_{time.time_ns()}'
    cfg['visualizer'] = dict(
        cfg['visualizer'], name=f'sea_ignore_vis_{time.time_ns()}')
    cfg['test_dataloader']['dataset']['indices'] = 2
    cfg['test_cfg'] = dict(
        type='SEATestLoop',
        eps=[4 / 255],
        n_iter=3,
        attacks=['mask_ce'],
        checks='none',
        **(loop or {}))
    cfg['test_evaluator'] = dict(type='SEAMetric', **(metric or {}))
    return cfg


def test_resolution_order():
    model = build_tiny_segmentor(seed=0)  # decode head: 255
    assert resolve_ignore_index(None, None, model) == 255
    assert resolve_ignore_index(7, None, model) == 7
    assert resolve_ignore_index(None, 2, model) == 2
    assert resolve_ignore_index(2, 2, model) == 2
    with pytest.raises(
            ConfigError,
            match='ignore_index=255 but SEAMetric '
            'has ignore_index=2'):
        resolve_ignore_index(255, 2, model)


def test_metric_default_leaves_it_to_the_loop():
    assert SEAMetric().ignore_index is None
    assert SEAMetric(ignore_index=0).ignore_index == 0


def test_the_metrics_ignore_index_is_the_loops(toy_data, tmp_path):
    """ignore_index=2 in the metric only: the loop ignores class 2 in its
    attacks and records (its pixels are not valid)."""
    runner = Runner.from_cfg(
        _cfg(tmp_path, toy_data, metric=dict(ignore_index=2)))
    metrics = runner.test()
    loop = runner.test_loop
    assert loop.ignore_index == 2
    assert loop.batches.ignore_index == 2
    records = loop.book.done
    assert sorted(records) == [0, 1]
    for idx, rec in records.items():
        label = loop.dataloader.dataset[idx]['data_samples'].gt_sem_seg.data
        assert bool((label == 2).any())
        assert rec['valid'] == int((label != 2).sum())
    assert metrics['sea/n_images'] == 2


def test_the_label_check_uses_the_metrics_ignore_index(tmp_path):
    """Labels with 255 (an ignored border) pass the check with the default
    ignore_index and are refused as out of range with the metric's 2."""
    data = make_toy_dataset(str(tmp_path / 'data'), ignore_border=True)
    runner = Runner.from_cfg(
        _cfg(tmp_path / 'two', data, metric=dict(ignore_index=2)))
    with pytest.raises(ConfigError, match=r'holds \[255\].*ignore_index 2'):
        runner.test()
    assert Runner.from_cfg(_cfg(tmp_path / 'default',
                                data)).test()['sea/n_images'] == 2


def test_loop_and_metric_disagreeing_is_refused(toy_data, tmp_path):
    runner = Runner.from_cfg(
        _cfg(
            tmp_path,
            toy_data,
            loop=dict(ignore_index=255),
            metric=dict(ignore_index=2)))
    with pytest.raises(ConfigError, match='ignore the same label'):
        runner.test_loop  # built lazily


def test_test_tool_leaves_ignore_index_in_the_metric():
    """tools/test.py --eval sea keeps the evaluator's ignore_index in the
    SEAMetric it makes (no copy into the loop's settings)."""
    from mmengine.config import Config
    tool = runpy.run_path(str(REPO / 'tools' / 'test.py'), run_name='tool_i')
    args = tool['parse_args'](['c.py', 'k.pth', '--eval', 'sea'])
    cfg = Config(
        dict(
            work_dir='/tmp',
            test_evaluator=dict(
                type='IoUMetric', iou_metrics=['mIoU'], ignore_index=3)))
    tool['configure_sea'](cfg, args)
    assert cfg.test_evaluator['type'] == 'SEAMetric'
    assert cfg.test_evaluator['ignore_index'] == 3
    assert 'ignore_index' not in cfg.test_cfg


def test_protocol_and_norm_come_with_the_records():
    from .test_sea_metric import _two_radius_records
    _, records = _two_radius_records(3)
    metric = SEAMetric()
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    metric.process({}, [
        dict(sea_record=r, sea_protocol='SEA-X, 6 it./attack', sea_norm='l2')
        for r in records
    ])
    assert (metric.protocol, metric.norm) == ('SEA-X, 6 it./attack', 'l2')
    metric.evaluate(3)
    assert (metric.protocol, metric.norm) == ('SEA-X, 6 it./attack', 'l2')


def test_summary_keys_unchanged(toy_data, tmp_path):
    runner = Runner.from_cfg(_cfg(tmp_path, toy_data))
    runner.test()
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert list(summary) == [
        'metrics', 'protocol', 'settings', 'checkpoint', 'n_images',
        'world_size', 'timing', 'versions', 'device', 'precision', 'tables',
        'trust'
    ]
    assert summary['protocol'].startswith('custom, 3 it./attack')
    # the metric got the protocol and norm with the records
    metric = runner.test_loop.metric
    assert (metric.protocol, metric.norm) == (summary['protocol'], 'linf')
