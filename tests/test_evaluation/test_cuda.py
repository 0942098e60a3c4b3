"""Adversarial training and the SEA test loop on a CUDA device (skipped
without one)."""
import copy

import pytest
import torch
from mmengine.optim import AmpOptimWrapper

from mmseg_robust.testing import build_tiny_segmentor, fake_batch
from mmseg_robust.training.hooks import AdvTrainingHook
from ..test_training.test_adv_training_hook import _fake_runner

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_one_adversarial_training_step_on_cuda(dtype):
    seg = build_tiny_segmentor(crop_size=(32, 32)).cuda().train()
    optim = AmpOptimWrapper(
        optimizer=torch.optim.SGD(seg.parameters(), lr=0.01), dtype=dtype)
    data = fake_batch(2, (32, 32))
    batch = copy.deepcopy(data)
    hook = AdvTrainingHook(eps=4 / 255, steps=2, random_start=True)
    hook.before_train_iter(_fake_runner(seg, optim), 0, batch)
    for clean, adv in zip(data['inputs'], batch['inputs']):
        assert adv.is_cuda  # stays on the device
        assert (adv.cpu() - clean.float()).abs().max() <= 4 + 1e-3
    assert any(not torch.equal(a.cpu(), c.float())
               for a, c in zip(batch['inputs'], data['inputs']))
    seg.train_step(batch, optim)  # the stock step takes the batch


@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_sea_evaluation_with_amp_on_cuda(trained_tiny, tmp_path, amp):
    import json

    from tests.conftest import load_tool
    metrics = load_tool('test')([
        trained_tiny['config'], trained_tiny['ckpt'], '--work-dir',
        str(tmp_path), '--eval', 'sea', '--eps', '4', '--n-iter', '6', '--amp',
        amp, '--channels-last'
    ])
    summary = json.loads((tmp_path / 'sea' / 'summary.json').read_text())
    assert summary['device'].startswith('cuda')
    assert summary['precision']['attack'] == amp
    assert summary['precision']['result'] == 'fp32'
    assert 0 <= metrics['sea/eps4/worst/aAcc'] <= metrics['sea/clean/aAcc']
