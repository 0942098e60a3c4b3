"""AdvTrainingHook with real Runners on a tiny model (docs/training.md)."""
import copy
import time
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from mmseg_robust.attacks import apgd
from mmseg_robust.models import AttackBatch
from mmseg_robust.testing import (build_tiny_segmentor, fake_batch,
                                  make_toy_dataset, tiny_runner_cfg)
from mmseg_robust.training import AdvTrainingHook

EPS = 8 / 255


class Probe(Hook):
    """Records the batch and BN statistics around the AT hook."""

    def __init__(self, when, store):
        self.priority = 'HIGHEST' if when == 'before' else 'LOWEST'
        self.when = when
        self.store = store

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        seg = runner.model
        bn = {
            k: v.clone()
            for k, v in seg.state_dict().items() if 'running' in k
        }
        self.store.setdefault(self.when, []).append(
            dict(
                inputs=[t.clone().float() for t in data_batch['inputs']],
                bn=bn,
                training=seg.training,
                grads=[
                    None if p.grad is None else p.grad.clone()
                    for p in seg.parameters()
                ]))


def _run(tmp_path,
         data_root,
         hook_cfg,
         max_iters=2,
         batch_size=2,
         extra_hooks=(),
         **kwargs):
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'),
        data_root,
        max_iters=max_iters,
        batch_size=batch_size,
        checkpoint_interval=1000,
        custom_hooks=[hook_cfg] if hook_cfg else [],
        **kwargs,
        val_interval=10**6)  # never validate
    cfg['experiment_name'] = f'at_{tmp_path.name}_{time.time()}'
    runner = Runner.from_cfg(cfg)
    for h in extra_hooks:
        runner.register_hook(h)
    runner.train()
    return runner


def _probed(tmp_path, data_root, hook_cfg, **kwargs) -> dict:
    """A run with :class:`Probe` hooks around the AT hook: their store."""
    store = {}
    _run(
        tmp_path,
        data_root,
        hook_cfg,
        extra_hooks=[Probe('before', store),
                     Probe('after', store)],
        **kwargs)
    return store


def test_trains_on_adversarial_images_within_eps(tmp_path, toy_data):
    store = _probed(tmp_path, toy_data,
                    dict(type='AdvTrainingHook', eps=EPS, steps=3))
    assert len(store['before']) == len(store['after']) == 2
    for before, after in zip(store['before'], store['after']):
        for clean, adv in zip(before['inputs'], after['inputs']):
            delta = (adv - clean).abs().max().item()
            assert 0 < delta <= EPS * 255 + 1e-3
            assert adv.min() >= 0 and adv.max() <= 255
        # the attack ran in eval mode: BN statistics untouched, train mode
        # restored, no weight gradients
        for k, v in before['bn'].items():
            assert torch.equal(v, after['bn'][k]), k
        assert before['training'] and after['training']
        for g0, g1 in zip(before['grads'], after['grads']):
            assert (g0 is None and g1 is None) or torch.equal(g0, g1)


def test_l2_training_stays_in_the_l2_ball(tmp_path, toy_data):
    """``norm='l2'``: the perturbation of each image (in [0, 1] units) has
    l2 norm at most eps, and the attack moved it."""
    store = _probed(
        tmp_path,
        toy_data,
        dict(
            type='AdvTrainingHook',
            eps=0.5,
            steps=3,
            norm='l2',
            random_start=True),
        max_iters=1)
    for clean, adv in zip(store['before'][0]['inputs'],
                          store['after'][0]['inputs']):
        norm = float(((adv - clean) / 255).norm())
        assert 0 < norm <= 0.5 * (1 + 1e-4)
        assert adv.min() >= 0 and adv.max() <= 255
    hook = AdvTrainingHook(eps=2.0, steps=4, norm='l2')
    assert hook.step_size == pytest.approx(2.5 * 2.0 / 4)
    with pytest.raises(ValueError, match='norm must be one of'):
        AdvTrainingHook(norm='l1')


def test_logs_attack_loss(tmp_path, toy_data):
    runner = _run(tmp_path, toy_data,
                  dict(type='AdvTrainingHook', eps=EPS, steps=2))
    hub = runner.message_hub
    assert 'train/adv_loss' in hub.log_scalars
    assert hub.get_scalar('train/adv_loss').current() > 0


def test_adv_ratio_and_start_iter(tmp_path, toy_data):
    store = _probed(
        tmp_path,
        toy_data,
        dict(
            type='AdvTrainingHook',
            eps=EPS,
            steps=1,
            adv_ratio=0.5,
            start_iter=1),
        max_iters=2,
        batch_size=4)
    # iteration 0: clean warm-up
    for c, a in zip(store['before'][0]['inputs'], store['after'][0]['inputs']):
        assert torch.equal(c, a)
    # iteration 1: the first half of the batch is adversarial
    changed = [
        not torch.equal(c, a) for c, a in zip(store['before'][1]['inputs'],
                                              store['after'][1]['inputs'])
    ]
    assert changed == [True, True, False, False]


def test_step_size_default_and_validation():
    hook = AdvTrainingHook(eps=4 / 255, steps=5)
    assert hook.step_size == pytest.approx(2.5 * 4 / 255 / 5)
    with pytest.raises(ValueError, match='8/255'):
        AdvTrainingHook(eps=4)
    with pytest.raises(ValueError, match='steps'):
        AdvTrainingHook(steps=0)
    with pytest.raises(ValueError, match='valid names'):
        AdvTrainingHook(loss='hinge')
    with pytest.raises(ValueError, match='adv_ratio'):
        AdvTrainingHook(adv_ratio=1.5)


class _AutocastWrapper:
    """optim_context like AmpOptimWrapper's, on the CPU (bfloat16)."""

    def __init__(self):
        self.entered = 0

    def optim_context(self, model):
        self.entered += 1
        return torch.autocast('cpu', dtype=torch.bfloat16)


def _fake_runner(model, optim_wrapper, iteration=0):
    return SimpleNamespace(
        model=model,
        optim_wrapper=optim_wrapper,
        iter=iteration,
        message_hub=MessageHub.get_instance(f'fake_{time.time()}'))


def test_respects_amp_context_and_padding():
    seg = build_tiny_segmentor(crop_size=(32, 32)).train()
    data = fake_batch(2, (28, 30))  # padded to the 32x32 crop size
    wrapper = _AutocastWrapper()
    hook = AdvTrainingHook(eps=EPS, steps=2)
    batch = copy.deepcopy(data)
    hook.before_train_iter(_fake_runner(seg, wrapper), 0, batch)
    assert wrapper.entered == 1
    for clean, adv in zip(data['inputs'], batch['inputs']):
        assert adv.shape == clean.shape and adv.dtype == torch.float32
        assert (adv - clean.float()).abs().max() <= EPS * 255 + 1e-3
    assert seg.training


def test_works_with_ddp_wrapper(tmp_path):
    """The hook unwraps MMDistributedDataParallel (1-process gloo group)."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        seg = build_tiny_segmentor().train()
        ddp = MMDistributedDataParallel(seg)
        optim = OptimWrapper(torch.optim.SGD(seg.parameters(), lr=0.1))
        data = fake_batch(2)
        batch = copy.deepcopy(data)
        AdvTrainingHook(
            eps=EPS,
            steps=1).before_train_iter(_fake_runner(ddp, optim), 0, batch)
        assert any(not torch.equal(c.float(), a)
                   for c, a in zip(data['inputs'], batch['inputs']))
        ddp.train_step(batch, optim)  # the stock step accepts the batch
    finally:
        dist.destroy_process_group()


def _robust_acc(runner, eps):
    model = runner.model.eval()
    loader = runner.build_dataloader(runner.cfg.test_dataloader)
    correct = valid = 0
    for data in loader:
        b = AttackBatch.from_data(model, data)
        res = apgd(b.model, b.x, b.y, eps, 20, start=0)
        correct += res.correct.sum().item()
        valid += res.valid.sum().item()
    return correct / valid


@pytest.mark.slow
def test_adversarial_training_makes_the_model_more_robust(tmp_path):
    root = make_toy_dataset(str(tmp_path / 'data'), n_train=16, n_val=8)
    accs = {}
    for name, hook in (('clean', None),
                       ('at',
                        dict(type='AdvTrainingHook', eps=16 / 255, steps=2))):
        (tmp_path / name).mkdir()
        runner = _run(
            tmp_path / name, root, hook, max_iters=60, batch_size=4, lr=0.05)
        accs[name] = (_robust_acc(runner, 0.0), _robust_acc(runner, 16 / 255))
    clean_model, at_model = accs['clean'], accs['at']
    assert at_model[0] > 0.9 and clean_model[0] > 0.9  # both learned
    assert at_model[1] > clean_model[1] + 0.04, accs


def test_random_starts_differ_per_rank_and_iteration():
    """Every rank of a distributed run and every iteration draws its own
    random start; the same (seed, iteration, rank) draws the same."""
    hook = AdvTrainingHook(random_start=True, seed=3)
    seeds = {hook.start_seed(it, rank) for it in range(3) for rank in range(4)}
    assert len(seeds) == 12
    assert hook.start_seed(1, 2) == AdvTrainingHook(seed=3).start_seed(1, 2)
    assert hook.start_seed(1, 2) != AdvTrainingHook(seed=4).start_seed(1, 2)


def test_adversarial_images_stay_on_the_model_device():
    seg = build_tiny_segmentor(crop_size=(32, 32)).train()
    data = fake_batch(2, (32, 32))
    device = next(seg.parameters()).device
    images, losses = AdvTrainingHook(
        eps=EPS,
        steps=1).attack(_fake_runner(seg, _AutocastWrapper()), seg, data)
    assert all(img.device == device and img.dtype == torch.float32
               for img in images)
    assert len(losses) == 1 and isinstance(losses[0], float)
