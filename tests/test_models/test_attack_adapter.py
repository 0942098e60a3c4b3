"""SegmentorAttackModel: the differentiable ``x in [0, 1] -> logits`` of an
MMSeg segmentor, checked against the segmentor's own ``test_step`` and
against a by-hand re-derivation of the data preprocessor and inference."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_robust.models import (AttackBatch, SegmentorAttackModel,
                                 final_decode_head)
from mmseg_robust.testing import tiny_segmentor_cfg
from ..tiny_models import make_batch


def _build(seed=0,
           mean=(123.675, 116.28, 103.53),
           std=(58.395, 57.12, 57.375),
           bgr_to_rgb=True,
           pad_val=0,
           test_pad=None,
           mode='whole',
           **kwargs):
    """A tiny EncoderDecoder in eval mode with the given preprocessor."""
    init_default_scope('mmseg')
    cfg = tiny_segmentor_cfg(test_mode=mode, **kwargs)
    pre = cfg.data_preprocessor
    pre.mean = None if mean is None else list(mean)
    pre.std = None if std is None else list(std)
    pre.bgr_to_rgb = bgr_to_rgb
    pre.pad_val = pad_val
    pre.test_cfg = test_pad
    torch.manual_seed(seed)
    return MODELS.build(cfg).eval()


def _test_step(seg, data):
    """``test_step`` logits and predictions (on a copy of the batch)."""
    with torch.no_grad():
        out = seg.test_step(copy.deepcopy(data))
    return ([s.seg_logits.data
             for s in out], [s.pred_sem_seg.data[0] for s in out])


def _adapter(seg, data):
    """The adapter's clean logits, each cut to its label size."""
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    with torch.no_grad():
        logits = batch.model(batch.x)
    return [
        logits[i, :, :s.gt_sem_seg.shape[0], :s.gt_sem_seg.shape[1]]
        for i, s in enumerate(data['data_samples'])
    ], batch


def _by_hand(seg, data, divisor=None):
    """Whole-image inference re-derived from the preprocessor's settings:
    channel order, mean/std, right/bottom padding with ``pad_val``, the
    segmentor's ``encode_decode``, then padding removed, flip undone and a
    bilinear resize to the label."""
    pre = seg.data_preprocessor
    outs = []
    for img, sample in zip(data['inputs'], data['data_samples']):
        x = img.float()
        if pre.channel_conversion:
            x = x[[2, 1, 0]]
        if pre._enable_normalize:
            x = (x - pre.mean) / pre.std
        h, w = x.shape[-2:]
        H, W = h, w
        if divisor:
            H, W = (math.ceil(h / divisor) * divisor,
                    math.ceil(w / divisor) * divisor)
        x = F.pad(x, (0, W - w, 0, H - h), value=pre.pad_val)
        with torch.no_grad():
            logits = seg.encode_decode(
                x[None], [dict(img_shape=(h, w), pad_shape=(H, W))])
        logits = logits[:, :, :h, :w]
        if sample.metainfo.get('flip'):
            logits = logits.flip(-1)
        outs.append(
            F.interpolate(
                logits,
                size=sample.gt_sem_seg.shape,
                mode='bilinear',
                align_corners=False)[0])
    return outs


def _close(a, b):
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
@pytest.mark.parametrize('norm', ['imagenet', 'none', 'unit'])
def test_whole_equals_test_step_and_by_hand(bgr_to_rgb, norm):
    """Odd image size padded to a multiple of 16, one image flipped, labels
    larger than the image: the adapter equals MMSeg and the re-derivation,
    for either channel order and normalisation."""
    mean, std = dict(
        imagenet=((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
        none=(None, None),
        unit=((0, 0, 0), (255, 255, 255)))[norm]
    seg = _build(
        mean=mean,
        std=std,
        bgr_to_rgb=bgr_to_rgb,
        pad_val=3,
        test_pad=dict(size_divisor=16))
    data = make_batch(
        2, (21, 27), (30, 25), flips=(False, True), seed=1, num_classes=3)
    ref, pred = _test_step(seg, data)
    ours, batch = _adapter(seg, data)
    _close(ours, ref)
    _close(ours, _by_hand(seg, data, divisor=16))
    for o, p in zip(ours, pred):
        assert torch.equal(o.argmax(0), p)
    # the batch: x in [0, 1], padded to 32 x 32, mask on the real pixels
    assert batch.x.shape == (2, 3, 32, 32)
    assert batch.x.min() >= 0 and batch.x.max() <= 1
    assert torch.equal(batch.x[0, :, :21, :27] * 255,
                       data['inputs'][0].float())
    assert batch.mask[:, 0, :21, :27].all()
    assert not batch.mask[:, 0, 21:].any()
    assert not batch.mask[:, 0, :, 27:].any()


def test_bgr_and_rgb_differ():
    """The channel flip is really applied (guards the parametrisation
    above against a no-op)."""
    data = make_batch(1, (16, 16), seed=2, num_classes=3)
    a, _ = _adapter(_build(bgr_to_rgb=True), data)
    b, _ = _adapter(_build(bgr_to_rgb=False), data)
    assert not torch.allclose(a[0], b[0])


@pytest.mark.parametrize('size', [(40, 28), (13, 11)])
def test_slide_equals_test_step(size):
    """Sliding windows (16 px, stride 12) over an image larger than the
    window and over one smaller than it; the second image flipped."""
    seg = _build(mode='slide')
    data = make_batch(
        2,
        size, (size[0] + 5, size[1] - 3),
        flips=(False, True),
        seed=3,
        num_classes=3)
    ref, _ = _test_step(seg, data)
    ours, _ = _adapter(seg, data)
    _close(ours, ref)


def test_normalize_equals_data_preprocessor():
    """``normalize`` of the padded batch equals the preprocessor's output,
    padding value included."""
    seg = _build(pad_val=5, test_pad=dict(size=(24, 32)))
    data = make_batch(2, (19, 23), seed=4, num_classes=3)
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    ref = seg.data_preprocessor(copy.deepcopy(data), False)['inputs']
    assert ref.shape == (2, 3, 24, 32)
    torch.testing.assert_close(
        batch.model.normalize(batch.x), ref, rtol=1e-6, atol=1e-5)


def test_labels_of_other_size_and_per_image():
    """Logits come at each label's size; labels of different sizes in a
    batch are padded with ``ignore_index`` to the largest, and so are the
    logits (with zeros)."""
    seg = _build()
    data = make_batch(2, (16, 20), (30, 25), seed=5, num_classes=3)
    small = make_batch(1, (16, 20), (9, 12), seed=6, num_classes=3)
    data['data_samples'][1] = small['data_samples'][0]
    data['inputs'][1] = small['inputs'][0]
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    assert batch.y.shape == (2, 30, 25)
    assert torch.equal(batch.y[1, :9, :12],
                       data['data_samples'][1].gt_sem_seg.data[0])
    assert (batch.y[1, 9:] == 255).all() and (batch.y[1, :, 12:] == 255).all()
    with torch.no_grad():
        logits = batch.model(batch.x)
    assert logits.shape == (2, 3, 30, 25)
    assert not logits[1, :, 9:].any()
    ref, _ = _test_step(seg, data)
    _close([logits[0], logits[1, :, :9, :12]], ref)


def test_padding_label_follows_the_given_ignore_index():
    """The evaluation passes its metric's ignore_index, so padded pixels are
    ignored by attack and metric alike even if the head uses another."""
    seg = _build()
    data = make_batch(2, (16, 20), (30, 25), seed=5, num_classes=3)
    small = make_batch(1, (16, 20), (9, 12), seed=6, num_classes=3)
    data['data_samples'][1] = small['data_samples'][0]
    data['inputs'][1] = small['inputs'][0]
    batch = AttackBatch.from_data(seg, copy.deepcopy(data), ignore_index=99)
    assert batch.ignore_index == 99
    assert (batch.y[1, 9:] == 99).all() and (batch.y[1, :, 12:] == 99).all()


def test_subset_equals_rows_of_the_batch():
    """``subset(idx)`` keeps each image's metadata (flip, label size)."""
    seg = _build(test_pad=dict(size_divisor=8))
    data = make_batch(
        3, (13, 18), (17, 14),
        flips=(True, False, True),
        seed=7,
        num_classes=3)
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    with torch.no_grad():
        full = batch.model(batch.x)
        for idx in ([2], [0, 2], [1]):
            sub = batch.model.subset(torch.tensor(idx))
            assert isinstance(sub, SegmentorAttackModel)
            assert [s.metainfo['flip'] for s in sub.data_samples] == \
                [data['data_samples'][i].metainfo['flip'] for i in idx]
            torch.testing.assert_close(
                sub(batch.x[idx]), full[idx], rtol=1e-5, atol=1e-6)
    assert batch.model.subset(torch.arange(3)) is batch.model


def test_input_gradient_finite_nonzero_and_zero_on_padding():
    seg = _build(test_pad=dict(size_divisor=16))
    data = make_batch(
        2, (21, 27), (30, 25), flips=(False, True), seed=8, num_classes=3)
    batch = AttackBatch.from_data(seg, data)
    x = batch.x.clone().requires_grad_(True)
    loss = F.cross_entropy(batch.model(x), batch.y, ignore_index=255)
    (grad, ) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    mask = batch.mask.expand_as(grad)
    # every image and channel gets gradient on its pixels, none on padding
    assert (grad.abs().sum((2, 3)) > 0).all()
    assert grad[mask].abs().mean() > 0
    assert not grad[~mask].any()
    # and the segmentor's weights get none (inputs only)
    assert all(p.grad is None for p in seg.parameters())


def test_padded_pixels_do_not_reach_the_model():
    """Whatever the attack writes into the padding, the model sees
    ``pad_val`` there: the logits do not change."""
    seg = _build(pad_val=0, test_pad=dict(size_divisor=16))
    data = make_batch(2, (21, 27), seed=9, num_classes=3)
    batch = AttackBatch.from_data(seg, data)
    noisy = torch.where(batch.mask, batch.x, torch.rand_like(batch.x))
    with torch.no_grad():
        torch.testing.assert_close(batch.model(noisy), batch.model(batch.x))
    # the real pixels do matter
    changed = batch.x.clone()
    changed[:, :, 3:6, 3:6] = 1 - changed[:, :, 3:6, 3:6]
    with torch.no_grad():
        assert not torch.allclose(batch.model(changed), batch.model(batch.x))


def test_raw_images_round_trip():
    seg = _build(test_pad=dict(size_divisor=16))
    data = make_batch(2, (21, 27), seed=10, num_classes=3)
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    assert isinstance(batch, AttackBatch)
    assert batch.sizes == [(21, 27), (21, 27)]
    for raw, img in zip(batch.raw_images(batch.x), data['inputs']):
        torch.testing.assert_close(raw, img.float(), rtol=0, atol=1e-4)


def test_train_mode_equals_the_training_forward():
    """``mode='train'``: pad to the preprocessor's ``size`` as training
    does; logits are what the decode head's loss sees (head output resized
    to the padded label), labels padded with ignore_index."""
    from mmseg.models.utils import resize
    seg = _build(crop_size=(32, 32))
    data = make_batch(2, (27, 30), seed=11, num_classes=3)
    batch = AttackBatch.from_data(seg, copy.deepcopy(data), mode='train')
    pre = seg.data_preprocessor(copy.deepcopy(data), True)
    labels = torch.stack([s.gt_sem_seg.data[0] for s in pre['data_samples']])
    with torch.no_grad():
        # BaseDecodeHead.loss_by_feat: resize to the (padded) label size
        ref = resize(
            seg.decode_head(seg.extract_feat(pre['inputs'])),
            size=labels.shape[1:],
            mode='bilinear',
            align_corners=seg.align_corners)
        ours = batch.model(batch.x)
    assert ours.shape == ref.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(batch.y, labels)
    assert (batch.y[:, 27:] == 255).all()
    assert not batch.mask[:, :, 27:].any() and batch.mask[:, :, :27, :30].all()


def test_binary_head_argmax_equals_mmseg_threshold():
    """A single-channel (sigmoid) head: argmax of the adapter's two-class
    logits is MMSeg's ``sigmoid(u) > threshold``."""
    init_default_scope('mmseg')
    cfg = tiny_segmentor_cfg(num_classes=2)
    cfg.decode_head.update(
        out_channels=1,
        threshold=0.4,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True))
    torch.manual_seed(0)
    seg = MODELS.build(cfg).eval()
    data = make_batch(2, (16, 20), (19, 23), seed=12, num_classes=2)
    _, pred = _test_step(seg, data)
    ours, _ = _adapter(seg, data)
    for o, p in zip(ours, pred):
        assert o.shape[0] == 2
        assert torch.equal(o.argmax(0), p.long())
        # the second channel is the raw logit, the first log(t / (1 - t))
        torch.testing.assert_close(o[0],
                                   torch.full_like(o[0], math.log(0.4 / 0.6)))


def _cascade(ignore_index=7):
    init_default_scope('mmseg')
    base = tiny_segmentor_cfg()
    fcn = dict(base.decode_head, ignore_index=ignore_index)
    ocr = dict(
        type='OCRHead',
        in_channels=16,
        in_index=1,
        channels=8,
        ocr_channels=8,
        num_classes=3,
        ignore_index=ignore_index,
        dropout_ratio=0.0,
        norm_cfg=dict(type='BN'),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss'))
    cfg = ConfigDict(
        type='CascadeEncoderDecoder',
        num_stages=2,
        data_preprocessor=base.data_preprocessor,
        backbone=base.backbone,
        decode_head=[fcn, ocr],
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


def test_cascade_segmentor_uses_its_final_head():
    """OCRNet / PointRend (``CascadeEncoderDecoder``): ``decode_head`` is a
    ModuleList; the ignore index comes from its last stage (it fell back to
    255 before)."""
    seg = _cascade(ignore_index=7)
    assert isinstance(seg.decode_head, nn.ModuleList)
    assert final_decode_head(seg) is seg.decode_head[-1]
    data = make_batch(2, (16, 20), seed=13, num_classes=3)
    data['data_samples'][1] = make_batch(
        1, (16, 20), (12, 20), seed=14, num_classes=3)['data_samples'][0]
    batch = AttackBatch.from_data(seg, copy.deepcopy(data))
    assert batch.ignore_index == 7
    assert (batch.y[1, 12:] == 7).all()
    ref, _ = _test_step(seg, data)
    ours, _ = _adapter(seg, data)
    _close(ours, ref)


def test_rejects_what_it_cannot_attack():
    from mmseg.models.segmentors import DepthEstimator
    with pytest.raises(TypeError, match='EncoderDecoder-like'):
        SegmentorAttackModel(nn.Linear(2, 2), [], torch.ones(1, 1, 2, 2))
    # a depth estimator (VPD) has encode_decode and inference, but its
    # output is depth: refused by type, before anything runs
    depth = DepthEstimator.__new__(DepthEstimator)
    nn.Module.__init__(depth)
    with pytest.raises(TypeError, match='predicts depth'):
        SegmentorAttackModel(depth, [], torch.ones(1, 1, 2, 2))
    seg = _build()
    with pytest.raises(ValueError, match="mode must be"):
        SegmentorAttackModel(seg, [], torch.ones(1, 1, 2, 2), mode='eval')
    data = make_batch(1, (16, 16), seed=15, num_classes=3)
    del data['data_samples'][0].gt_sem_seg
    with pytest.raises(ValueError, match='LoadAnnotations'):
        AttackBatch.from_data(seg, data)
    with pytest.raises(ValueError, match='one data sample per image'):
        AttackBatch.from_data(seg,
                              dict(inputs=make_batch(1, (16, 16))['inputs']))


def test_wrapper_holds_no_parameters_and_follows_training_mode():
    seg = _build()
    batch = AttackBatch.from_data(
        seg, make_batch(1, (16, 16), seed=16, num_classes=3))
    assert list(batch.model.parameters()) == []
    assert batch.model.state_dict() == {}
    assert not batch.model.training
    seg.train()
    assert batch.model.training
