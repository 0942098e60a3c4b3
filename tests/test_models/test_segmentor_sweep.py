"""Every MMSeg 1.2.2 model family through the attack adapter, SEA and AT.

One representative stock config per family (``segmentor_families.py``),
shrunk to CPU size with random weights. For each family that builds here:

* the adapter's clean logits equal the segmentor's own ``test_step``, in
  whole mode (odd image size padded by the data preprocessor, one image
  flipped, labels at another size than the image) and slide mode;
* gradients with respect to the input are finite, non-zero on the image and
  zero on the padding, and a short SEA runs within its budget;
* one ``AdvTrainingHook`` iteration (the hook's ``before_train_iter`` on the
  real segmentor, then the stock ``train_step``) runs.

The families this installation cannot build (compiled mmcv ops, mmdet,
VPD's packages) must stop with one sentence naming the family and what it
needs; where the requirement is installed (full mmcv: CCNet, PSANet) they
must pass the check and build. A family whose gradients this torch cannot
compute because of a bug in MMSeg itself (DNLNet on torch 2.1) is a strict
xfail of the gradient and training checks. Results and what each family
needed: ``docs/segmentors.md``.
"""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from mmseg_robust.attacks import SEA, SEA_LOSSES
from mmseg_robust.models import AttackBatch
from mmseg_robust.models.requirements import (MissingRequirementError,
                                              build_segmentor,
                                              check_model_requirements,
                                              model_requirement_problems)
from mmseg_robust.training import AdvTrainingHook
from ..tiny_models import make_batch
from .segmentor_families import (FAMILIES, build_tiny, known_gradient_failure,
                                 load_stock_config, requirement_installed)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]

BUILDABLE = [f for f in FAMILIES if f.needs is None]
NOT_HERE = [f for f in FAMILIES if f.needs is not None]
EPS = 8 / 255


def _with_gradients(families):
    """The families as parameters; a known failure of MMSeg itself under
    this torch (:func:`known_gradient_failure`) is a strict xfail: it must
    fail, with the error it is known for."""
    params = []
    for f in families:
        reason = known_gradient_failure(f)
        marks = [] if reason is None else [
            pytest.mark.xfail(reason=reason, raises=RuntimeError, strict=True)
        ]
        params.append(pytest.param(f, id=f.name, marks=marks))
    return params


def _sizes(family):
    """Image sizes for whole and slide inference, and the label size.

    Whole: odd, padded by the preprocessor to one crop. Slide: one row of
    two overlapping windows. Labels: another size than either (test
    pipelines resize the image, not the label).
    """
    c = family.crop
    return (c - 3, c - 5), (c, c + 13), (c + 9, c + 6)


def _test_pad(family):
    """Test-time padding of the preprocessor: to a multiple of 32, or to the
    one size a fixed-size backbone takes."""
    if family.fixed_size:
        return ('size', (family.crop, family.crop))
    return ('size_divisor', 32)


def _to_slide(seg, family):
    """Switch a built segmentor to sliding-window inference, no padding."""
    c = family.crop
    seg.test_cfg.mode = 'slide'
    seg.test_cfg.crop_size = (c, c)
    seg.test_cfg.stride = (3 * c // 4, 3 * c // 4)
    seg.data_preprocessor.test_cfg = None


def _label_classes(seg):
    """Labels drawn from at most 4 classes, fewer for binary models."""
    return min(4, seg.num_classes)


def _reference(seg, data, seed):
    """``test_step``'s logits and predictions (per image, label size)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        out = seg.test_step(copy.deepcopy(data))
    return [s.seg_logits.data
            for s in out], [s.pred_sem_seg.data[0] for s in out]


def _adapter(seg, data, seed):
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    torch.manual_seed(seed)
    with torch.no_grad():
        logits = batch.model(batch.x)
    shapes = [s.gt_sem_seg.shape for s in data['data_samples']]
    return [logits[i, :, :h, :w] for i, (h, w) in enumerate(shapes)]


def _assert_same(ours, ref, what):
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (what, i, a.shape, b.shape)
        scale = float(b.abs().max()) + 1e-6
        torch.testing.assert_close(
            a,
            b,
            rtol=1e-4,
            atol=1e-4 * scale,
            msg=lambda m: f'{what} '
            f'image {i}: {m}')


@pytest.mark.parametrize('family', BUILDABLE, ids=lambda f: f.name)
def test_clean_logits_equal_test_step(family):
    whole, slide, label = _sizes(family)
    seg = build_tiny(family, mode='whole', test_pad=_test_pad(family))
    classes = _label_classes(seg)
    seed = 0
    # whole: odd size padded by the preprocessor, second image flipped,
    # labels at another size than the image
    data = make_batch(
        2, whole, label, flips=(False, True), seed=1, num_classes=classes)
    ref_logits, ref_pred = _reference(seg, data, seed)
    ours = _adapter(seg, data, seed)
    _assert_same(ours, ref_logits, f'{family.name} whole')
    for o, p in zip(ours, ref_pred):
        # argmax of equal logits: the same prediction up to exact ties
        assert (o.argmax(0) == p).float().mean() > 0.999
    # slide: the same model with MMSeg's sliding-window inference
    _to_slide(seg, family)
    data = make_batch(
        2, slide, label, flips=(True, False), seed=2, num_classes=classes)
    ref_logits, _ = _reference(seg, data, seed)
    _assert_same(_adapter(seg, data, seed), ref_logits, f'{family.name} slide')


@pytest.mark.parametrize('family', _with_gradients(BUILDABLE))
def test_gradients_and_sea(family):
    whole, slide, label = _sizes(family)
    seg = build_tiny(family, mode='whole', test_pad=_test_pad(family))
    classes = _label_classes(seg)
    # whole: SEA's four losses on an odd-size, padded batch; slide: one
    # row of two overlapping windows, one red-eps APGD run
    for mode, size, losses in (('whole', whole, SEA_LOSSES), ('slide', slide,
                                                              ('mask_ce', ))):
        if mode == 'slide':
            _to_slide(seg, family)
        data = make_batch(
            2, size, label, flips=(False, True), seed=3, num_classes=classes)
        batch = AttackBatch.from_data(seg, data)
        x = batch.x.clone().requires_grad_(True)
        torch.manual_seed(0)
        loss = F.cross_entropy(
            batch.model(x), batch.y, ignore_index=batch.ignore_index)
        (grad, ) = torch.autograd.grad(loss, x)
        what = f'{family.name} {mode}'
        assert torch.isfinite(grad).all(), what
        mask = batch.mask.expand_as(grad)
        assert grad[mask].abs().sum() > 0, what
        assert not grad[~mask].any(), what  # the padding is not attacked
        # labels = the clean prediction, so that there is something to
        # attack (random weights get next to no pixel right)
        torch.manual_seed(0)
        with torch.no_grad():
            pred = batch.model(batch.x).argmax(1)
        y = torch.where(batch.y == batch.ignore_index, batch.y, pred)
        torch.manual_seed(0)
        sea = SEA(
            batch.model,
            EPS,
            n_iter=3,
            losses=losses,
            ignore_index=batch.ignore_index,
            skip_broken=False)
        if family.randomised:  # SEA says its results are unreliable
            with pytest.warns(UserWarning, match='different outputs'):
                res = sea.run(batch.x, y, mask=batch.mask)
        else:
            res = sea.run(batch.x, y, mask=batch.mask)
        assert all(a.n_evals > 0 for a in res.attacks.values()), what
        assert (res.correct <= res.clean_correct).all(), what
        assert res.correct.sum() < res.clean_correct.sum(), what
        delta = res.x_adv - batch.x
        assert delta.abs().max() <= EPS + 1e-6, what
        assert not delta[~batch.mask.expand_as(delta)].any(), what
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1, what


@pytest.mark.parametrize('family', _with_gradients(BUILDABLE))
def test_adversarial_training_step(family):
    seg = build_tiny(family, mode='whole')
    seg.train()
    optim = OptimWrapper(torch.optim.SGD(seg.parameters(), lr=0.01))
    runner = SimpleNamespace(
        model=seg,
        iter=0,
        optim_wrapper=optim,
        message_hub=MessageHub.get_instance(f'sweep_{family.name}'))
    c = family.crop
    # smaller than the crop: the preprocessor pads, the attack must not
    # perturb the padding (MMSeg's weighted CE cannot take padded labels)
    size = (c, c) if family.weighted_ce else (c - 3, c - 1)
    data = make_batch(
        2,
        size,
        size,
        seed=4,
        num_classes=_label_classes(seg),
        edges=family.name == 'pidnet',
        ignore=not family.weighted_ce)
    clean = [t.clone().float() for t in data['inputs']]
    before = [p.detach().clone() for p in seg.parameters()]
    hook = AdvTrainingHook(eps=EPS, steps=1)
    hook.before_train_iter(runner, 0, data)
    assert seg.training  # mode restored after the attack
    for c_img, a_img in zip(clean, data['inputs']):
        d = (a_img - c_img).abs().max().item()
        assert 0 < d <= EPS * 255 + 1e-3, (family.name, d)
    losses = seg.train_step(data, optim)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), (family.name, losses)
    changed = sum(not torch.equal(b, p.detach())
                  for b, p in zip(before, seg.parameters()))
    assert changed > 0, family.name
    assert runner.message_hub.get_scalar('train/adv_loss').current() > 0


@pytest.mark.parametrize('name', ['ocrnet', 'segformer'])
def test_adversarial_training_with_a_real_runner(name, tmp_path, toy_data):
    """Two of the families (a cascade segmentor, a transformer) trained by
    a real Runner with the hook from the config, on the toy dataset."""
    import time

    from mmengine.runner import Runner

    from mmseg_robust.testing import tiny_runner_cfg
    from .segmentor_families import FAMILY_BY_NAME, tiny_model_cfg
    cfg = tiny_runner_cfg(
        str(tmp_path / 'work'),
        toy_data,
        max_iters=1,
        batch_size=2,
        checkpoint_interval=1000,
        custom_hooks=[dict(type='AdvTrainingHook', eps=EPS, steps=1)],
        model=tiny_model_cfg(FAMILY_BY_NAME[name]),
        val_interval=10**6)  # never validate
    cfg['experiment_name'] = f'sweep_{name}_{time.time()}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    assert hub.get_scalar('train/adv_loss').current() > 0
    assert torch.isfinite(torch.tensor(hub.get_scalar('train/loss').current()))
    assert runner.iter == 1


@pytest.mark.parametrize('family', NOT_HERE, ids=lambda f: f.name)
def test_missing_requirement_is_one_sentence(family):
    """Without its requirement a family stops with one sentence; with it
    (e.g. CCNet and PSANet with full mmcv's compiled ops) nothing is
    reported and the stock model builds."""
    cfg = load_stock_config(family, import_custom_modules=False)
    if requirement_installed(family):
        assert model_requirement_problems(cfg.model) == []
        check_model_requirements(cfg.model)
        if family.needs == 'mmcv._ext':  # builds without custom imports
            head = {'ccnet': 'CCHead', 'psanet': 'PSAHead'}[family.name]
            model = build_segmentor(cfg.model)
            assert type(model.decode_head).__name__ == head
        return
    name = {
        'mask2former': 'Mask2Former',
        'maskformer': 'MaskFormer',
        'ccnet': 'CCNet',
        'psanet': 'PSANet',
        'vpd': 'VPD'
    }[family.name]
    with pytest.raises(MissingRequirementError) as info:
        check_model_requirements(cfg.model)
    message = str(info.value)
    assert message.startswith(name), message
    assert family.needs in message, message
    assert '\n' not in message
    with pytest.raises(MissingRequirementError, match=f'^{name}'):
        build_segmentor(cfg.model)
