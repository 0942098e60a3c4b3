"""SEATestLoop hands MMSeg-shaped ``outputs`` to ``after_test_iter`` hooks:
the attacked images' SegDataSamples with the worst case at the largest
radius as ``pred_sem_seg`` (a real MMEngine Runner on the toy dataset)."""
import time
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from mmseg.structures import SegDataSample

from mmseg_robust.attacks import SEASettings
from mmseg_robust.evaluation import image_areas
from mmseg_robust.testing import tiny_runner_cfg

EPS = [4 / 255, 8 / 255]


@HOOKS.register_module(force=True)
class SEAOutputsRecorder(Hook):
    """Keeps what ``after_test_iter`` gets."""

    def __init__(self):
        self.calls = []

    def after_test_iter(self,
                        runner,
                        batch_idx,
                        data_batch=None,
                        outputs=None):
        self.calls.append((batch_idx, data_batch, outputs))


def _cfg(work_dir, data_root, **loop):
    cfg = tiny_runner_cfg(str(work_dir), data_root)
    cfg['experiment_name'] = f'sea_hooks_{time.time_ns()}'
    cfg['visualizer'] = dict(
        cfg['visualizer'], name=f'sea_hooks_vis_{time.time_ns()}')
    cfg['test_dataloader']['batch_size'] = 3  # 4 images: batches of 3, 1
    cfg['test_cfg'] = dict(
        type='SEATestLoop',
        eps=EPS,
        n_iter=3,
        attacks=['mask_ce', 'js'],
        checks='none',
        **loop)
    cfg['test_evaluator'] = dict(type='SEAMetric')
    cfg['custom_hooks'] = [dict(type='SEAOutputsRecorder')]
    cfg['default_hooks']['visualization'] = dict(
        type='SegVisualizationHook', draw=True, interval=1)
    return cfg


def _recorder(runner):
    return next(h for h in runner.hooks if isinstance(h, SEAOutputsRecorder))


@pytest.fixture
def sea_run(toy_data, tmp_path, monkeypatch):
    """One SEA evaluation with the recording hook and MMSeg's drawing
    SegVisualizationHook; SEA's results kept per batch (the last call of
    each batch is at the largest radius)."""
    results = []
    original = SEASettings.__call__

    def spying(self, model, x, y, **kwargs):
        res = original(self, model, x, y, **kwargs)
        results.append((self.eps, res))
        return res

    monkeypatch.setattr(SEASettings, '__call__', spying)
    runner = Runner.from_cfg(_cfg(tmp_path / 'work', toy_data))
    metrics = runner.test()
    monkeypatch.setattr(SEASettings, '__call__', original)
    return runner, metrics, results


def test_hooks_get_segdatasamples_with_the_worst_case(sea_run):
    runner, metrics, results = sea_run
    calls = _recorder(runner).calls
    assert [c[0] for c in calls] == [0, 1]
    # per batch, SEA's result at the largest radius (the last of its run)
    largest = [res for eps, res in results if eps == max(EPS)]
    assert len(largest) == 2
    records = runner.test_loop.book.done
    n = 0
    for (_, data_batch, outputs), res in zip(calls, largest):
        samples = data_batch['data_samples']
        assert len(outputs) == len(samples)
        for i, (out, given) in enumerate(zip(outputs, samples)):
            assert isinstance(out, SegDataSample)
            # in batch order, with the ground truth as given
            assert out.metainfo['sample_idx'] == given.metainfo['sample_idx']
            assert out.gt_sem_seg is given.gt_sem_seg
            label = out.gt_sem_seg.data
            pred = out.pred_sem_seg.data
            assert pred.shape == label.shape and pred.shape[0] == 1
            h, w = label.shape[-2:]
            assert torch.equal(pred[0], res.pred[i, :h, :w])
            # the records' worst case at the largest radius is this one
            rec = records[out.metainfo['sample_idx']]
            assert image_areas(pred[0], label[0], 3, 255)['correct'] == \
                rec['eps']['8']['worst']['correct']
            clean = out.clean_pred_sem_seg.data[0]
            assert image_areas(clean, label[0], 3, 255)['correct'] == \
                rec['clean']['correct']
            n += 1
    assert n == 4 and metrics['sea/n_images'] == 4


def test_seg_visualization_hook_draws_every_image(sea_run):
    runner, _, _ = sea_run
    drawn = list(Path(runner.work_dir).rglob('vis_image/*.png'))
    assert len(drawn) == 4, drawn


def test_resumed_images_are_left_out_of_outputs(sea_run, toy_data,
                                                monkeypatch):
    """A resumed run whose images are all done attacks nothing; hooks get
    empty outputs (records hold no predictions), and the visualization
    hook runs over them without error."""
    runner, metrics, _ = sea_run
    attacked = []
    monkeypatch.setattr(SEASettings, '__call__',
                        lambda *a, **k: attacked.append(1) or 1 / 0)
    again = Runner.from_cfg(_cfg(runner.work_dir, toy_data, resume=True))
    assert again.test() == pytest.approx(metrics)
    assert attacked == []
    assert [c[2] for c in _recorder(again).calls] == [[], []]
