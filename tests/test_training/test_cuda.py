"""Adversarial training on a CUDA device (skipped without one)."""
import copy

import pytest
import torch
from mmengine.optim import AmpOptimWrapper

from mmseg_robust.testing import build_tiny_segmentor, fake_batch
from mmseg_robust.training.hooks import AdvTrainingHook
from .test_adv_training_hook import _fake_runner

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
