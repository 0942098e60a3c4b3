"""Released PIR-AT checkpoints in MMSeg: conversion and logit parity.

A reference network with the published module layout
(:mod:`tests.pir_at_reference`, random weights and BatchNorm statistics)
stands in for a downloaded checkpoint: its ``state_dict`` is saved,
converted with :func:`convert_pir_at`, loaded strictly into the model of a
``configs/pir_at`` config, and both compute logits on the same [0, 1]
images (the MMSeg side through its data preprocessor and inference).
"""
import copy
import io
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_robust  # noqa: F401  (registration)
from mmseg_robust.models import (ClassSubsetEncoderDecoder, RobustConvNeXt,
                                 convert_pir_at)
from mmseg_robust.models.pir_at import upernet_convnext_keys
from tests.pir_at_reference import (DEPTHS_S, DEPTHS_T, RefSegmenter,
                                    RefUperNetConvNeXt, randomize_)

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'pir_at'
SIZE = 64
ATOL = 1e-4
# a small network with the same layout, for the error and loader tests
SMALL = dict(
    depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), channels=16, aux_channels=8)

pytestmark = pytest.mark.usefixtures('one_thread')


def config_path(model: str, dataset: str, protocol: str) -> str:
    return str(CONFIGS / f'{model}_pir-at_{dataset}_{protocol}.py')


def build_from_config(path: str,
                      small: bool = False,
                      **backbone) -> torch.nn.Module:
    """The model of a config, in eval mode; ``small``: with the widths and
    depths of ``SMALL`` (same layout, for the tests that need no
    full-size network)."""
    cfg = Config.fromfile(path)
    model_cfg = cfg.model
    if small:
        dims = list(SMALL['dims'])
        model_cfg.backbone.arch = dict(
            depths=list(SMALL['depths']), channels=dims)
        model_cfg.decode_head.update(
            in_channels=dims, channels=SMALL['channels'])
        model_cfg.auxiliary_head.update(
            in_channels=dims[2], channels=SMALL['aux_channels'])
    model_cfg.backbone.update(backbone)
    init_default_scope('mmseg')
    return MODELS.build(model_cfg).eval()


def saved_and_converted(ref: torch.nn.Module) -> OrderedDict:
    """Save the reference's state dict as the authors do (in memory: the
    files are large), read it back and convert it."""
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    return convert_pir_at(torch.load(buffer, weights_only=True)).state_dict


def mmseg_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of an MMSeg segmentor for [0, 1] RGB images ``x``, fed as
    its dataloader would ([0, 255] BGR) through its preprocessor."""
    samples = []
    for _ in range(x.shape[0]):
        s = SegDataSample()
        s.set_metainfo(dict(img_shape=x.shape[2:], ori_shape=x.shape[2:]))
        samples.append(s)
    raw = [img[[2, 1, 0]] * 255 for img in x]
    data = model.data_preprocessor(
        dict(inputs=raw, data_samples=samples), False)
    metas = [s.metainfo for s in data['data_samples']]
    return model.inference(data['inputs'], metas)


def assert_same_logits(ref_logits, logits):
    assert ref_logits.shape == logits.shape
    diff = (ref_logits - logits).abs().max().item()
    assert diff <= ATOL, f'max |difference| {diff:.2e}'
    assert torch.equal(ref_logits.argmax(1), logits.argmax(1))


# --- parity with the published architecture ------------------------------

# both depths, both stems, both class counts (each value twice)
UPERNET_CASES = [
    ('upernet_convnext-t-cvst', 'voc2012', DEPTHS_T, 'conv', 21),
    ('upernet_convnext-s-cvst', 'ade20k', DEPTHS_S, 'conv', 151),
    ('upernet_convnext-t-cvst', 'ade20k', DEPTHS_T, 'patch', 151),
    ('upernet_convnext-s-cvst', 'voc2012', DEPTHS_S, 'patch', 21),
]


@pytest.mark.parametrize(
    'model, dataset, depths, stem, classes',
    UPERNET_CASES,
    ids=[f"{c[0].split('-')[1]}-{c[3]}-{c[4]}" for c in UPERNET_CASES])
def test_upernet_logits_equal_the_published_architecture(
        model, dataset, depths, stem, classes):
    ref = randomize_(RefUperNetConvNeXt(depths, classes, stem), seed=1)
    state_dict = saved_and_converted(ref)
    path = config_path(model, dataset, 'paper-protocol')
    seg = build_from_config(path, stem=stem)
    result = seg.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE, generator=gen)
    with torch.no_grad():
        assert_same_logits(ref(x), mmseg_logits(seg, x))


def test_comparison_detects_a_small_weight_error():
    """The tolerance is not vacuous: a 1 % error in one BatchNorm of the
    head is far above it (and without it the networks agree)."""
    ref = small_upernet()
    state_dict = saved_and_converted(ref)
    seg = build_from_config(
        config_path('upernet_convnext-t-cvst', 'voc2012', 'paper-protocol'),
        small=True)
    seg.load_state_dict(state_dict, strict=True)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same_logits(ref(x), mmseg_logits(seg, x))
    state_dict['decode_head.fpn_bottleneck.bn.running_var'] *= 1.01
    seg.load_state_dict(state_dict, strict=True)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        diff = (ref(x) - mmseg_logits(seg, x)).abs().max().item()
    assert diff > 10 * ATOL


def test_stock_protocol_model_drops_the_other_class():
    """The ADE20K MMSeg-protocol config leaves out output 0 ("other") and
    keeps the other 150 logits unchanged, in order."""
    ref = small_upernet(num_classes=151)
    seg = build_from_config(
        config_path('upernet_convnext-t-cvst', 'ade20k', 'mmseg-protocol'),
        small=True)
    assert isinstance(seg, ClassSubsetEncoderDecoder)
    seg.load_state_dict(saved_and_converted(ref), strict=True)
    seg.test_cfg.update(crop_size=(SIZE, SIZE), stride=(SIZE, SIZE))
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same_logits(ref(x)[:, 1:], mmseg_logits(seg, x))


def test_segmenter_logits_equal_the_published_architecture():
    """At 64x64, with the position embedding resized from the 512x512
    grid as the authors' encoder does."""
    ref = randomize_(RefSegmenter(151), seed=4)
    state_dict = saved_and_converted(ref)
    seg = build_from_config(
        config_path('segmenter_vit-s', 'ade20k', 'paper-protocol'))
    result = seg.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same_logits(ref(x), mmseg_logits(seg, x))


@pytest.mark.slow
def test_segmenter_at_its_training_size():
    """At 512x512 (the paper's crop: no position-embedding resize)."""
    ref = randomize_(RefSegmenter(151), seed=5)
    seg = build_from_config(
        config_path('segmenter_vit-s', 'ade20k', 'paper-protocol'))
    seg.load_state_dict(saved_and_converted(ref), strict=True)
    x = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        assert_same_logits(ref(x), mmseg_logits(seg, x))


# --- what the converter accepts and refuses ------------------------------


def small_upernet(**kwargs) -> RefUperNetConvNeXt:
    args = dict(SMALL, num_classes=21)
    args.update(kwargs)
    return randomize_(RefUperNetConvNeXt(**args), seed=0)


def test_conversion_reports_what_it_found():
    conv = convert_pir_at(small_upernet().state_dict())
    assert (conv.model, conv.stem, conv.num_classes) == ('upernet-convnext',
                                                         'conv', 21)
    assert conv.depths == (1, 1, 2, 1)
    assert conv.arch == 'convnext depths (1, 1, 2, 1)'
    assert conv.ignored == [] and conv.filled == []
    full = convert_pir_at(RefUperNetConvNeXt(DEPTHS_S, 151).state_dict())
    assert (full.arch, full.num_classes) == ('convnext-s', 151)
    seg = convert_pir_at(RefSegmenter(151).state_dict())
    assert (seg.model, seg.arch, seg.num_classes,
            seg.depths) == ('segmenter-vit', 'vit-s', 151, (12, 2))
    assert seg.ignored == ['encoder.head.weight', 'encoder.head.bias']


def test_conversion_accepts_ddp_prefixes_and_containers():
    state_dict = small_upernet().state_dict()
    plain = convert_pir_at(state_dict).state_dict
    wrapped = {'state_dict': {'module.' + k: v for k, v in state_dict.items()}}
    again = convert_pir_at(wrapped).state_dict
    assert list(again) == list(plain)
    assert all(torch.equal(plain[k], again[k]) for k in plain)


def test_missing_batchnorm_counters_are_filled():
    state_dict = {
        k: v
        for k, v in small_upernet().state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    conv = convert_pir_at(state_dict)
    # 4 pooling + bottleneck + 3 lateral + 3 fpn + fpn_bottleneck + aux
    assert len(conv.filled) == 13
    assert 'decode_head.bottleneck.bn.num_batches_tracked' in conv.filled
    assert all(conv.state_dict[k] == 0 for k in conv.filled)


def test_missing_and_unexpected_keys_are_listed():
    state_dict = small_upernet().state_dict()
    broken = OrderedDict(state_dict)
    del broken['decode_head.bottleneck.conv.weight']
    broken['decode_head.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        convert_pir_at(broken)
    msg = str(err.value)
    assert 'UPerNet + ConvNeXt' in msg
    assert '1 expected keys are missing: decode_head.bottleneck.conv.weight' \
        in msg
    assert '1 keys were not expected: decode_head.extra.weight' in msg
    assert 'expected ' in msg and 'found ' in msg


def test_other_files_are_refused_with_the_expected_layout():
    from tests.test_models.test_robust_convnext import make_timm_convnext
    with pytest.raises(ValueError, match='not a released PIR-AT') as err:
        convert_pir_at(make_timm_convnext().state_dict())
    assert 'convert_robust_convnext' in str(err.value)
    assert 'stem.0.weight' in str(err.value)  # what was found


def test_head_class_counts_must_agree():
    state_dict = OrderedDict(small_upernet().state_dict())
    for p in ('weight', 'bias'):
        state_dict[f'auxiliary_head.classifier.{p}'] = \
            state_dict[f'auxiliary_head.classifier.{p}'][:5]
    with pytest.raises(ValueError, match='21 classes but.*5'):
        convert_pir_at(state_dict)


def test_distilled_segmenter_is_refused():
    state_dict = OrderedDict(RefSegmenter(151, layers=2).state_dict())
    state_dict['encoder.dist_token'] = torch.zeros(1, 1, 384)
    with pytest.raises(ValueError, match='not expected: encoder.dist_token'):
        convert_pir_at(state_dict)


def test_expected_keys_are_the_reference_keys():
    """The key list the converter checks against is the published
    layout's (the reference network's), for both stems."""
    for stem in ('conv', 'patch'):
        ref = RefUperNetConvNeXt(stem=stem, **SMALL)
        assert sorted(upernet_convnext_keys(SMALL['depths'], stem)) == \
            sorted(ref.state_dict())


# --- backbone-only loading of the original ConvNeXt layout ---------------


def _backbone(stem: str, checkpoint: str) -> RobustConvNeXt:
    model = RobustConvNeXt(
        arch=dict(depths=list(SMALL['depths']), channels=list(SMALL['dims'])),
        stem=stem,
        out_indices=[0, 1, 2, 3],
        gap_before_final_norm=False,
        init_cfg=dict(type='RobustPretrained', checkpoint=checkpoint))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('stem', ['conv', 'patch'])
def test_robust_pretrained_reads_the_backbone_of_a_published_model(
        stem, tmp_path):
    """RobustPretrained takes the backbone out of a whole released
    segmentation checkpoint (original ConvNeXt layout under backbone.)."""
    ref = small_upernet(stem=stem)
    path = str(tmp_path / 'published.pth')
    torch.save(ref.state_dict(), path)
    backbone = _backbone(stem, path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(ref.backbone(x), backbone(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_original_classification_layout_loads(tmp_path):
    """facebookresearch's layout: final ``norm`` -> ``norm3``, ``head``
    ignored, under ``model`` as their checkpoints store it."""
    ref = small_upernet(stem='patch').backbone
    state_dict = OrderedDict(
        (k, v) for k, v in ref.state_dict().items()
        if not k.startswith(('norm0', 'norm1', 'norm2', 'norm3')))
    state_dict['norm.weight'] = ref.norm3.weight.detach().clone()
    state_dict['norm.bias'] = ref.norm3.bias.detach().clone()
    state_dict['head.weight'] = torch.zeros(10, 64)
    state_dict['head.bias'] = torch.zeros(10)
    path = str(tmp_path / 'convnext_classifier.pth')
    torch.save({'model': state_dict}, path)
    backbone = RobustConvNeXt(
        arch=dict(depths=list(SMALL['depths']), channels=list(SMALL['dims'])),
        out_indices=[3],
        gap_before_final_norm=False,
        init_cfg=dict(type='RobustPretrained', checkpoint=path))
    backbone.init_weights()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.eval()(x)[0], ref(x)[3], atol=1e-5, rtol=0)
    conv = mmseg_robust.models.convert_robust_convnext({'model': state_dict},
                                                       return_info=True)
    assert (conv.layout, conv.stem) == ('original', 'patch')
    assert sorted(conv.ignored) == ['head.bias', 'head.weight']


def test_robust_pretrained_refuses_a_stem_mismatch(tmp_path):
    path = str(tmp_path / 'published.pth')
    torch.save(small_upernet(stem='conv').state_dict(), path)
    with pytest.raises(RuntimeError, match="conv stem.*stem='patch'"):
        _backbone('patch', path)


# --- ClassSubsetEncoderDecoder ---------------------------------------------


def test_class_subset_segmentor_checks_its_classes():
    cfg = Config.fromfile(
        config_path('upernet_convnext-t-cvst', 'ade20k', 'mmseg-protocol'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.arch = dict(
        depths=list(SMALL['depths']), channels=list(SMALL['dims']))
    model_cfg.decode_head.update(in_channels=list(SMALL['dims']), channels=8)
    model_cfg.auxiliary_head.update(in_channels=32, channels=8)
    init_default_scope('mmseg')
    for bad in ([], [151], [-1], [0, 0], list(range(150))):
        with pytest.raises(ValueError, match='ClassSubsetEncoderDecoder'):
            MODELS.build(dict(model_cfg, drop_classes=bad))
    seg = MODELS.build(dict(model_cfg, drop_classes=[0, 5])).eval()
    assert seg.keep_classes == [c for c in range(151) if c not in (0, 5)]
    x = torch.rand(1, 3, 32, 32)
    sample = SegDataSample()
    sample.set_metainfo(dict(img_shape=(32, 32), ori_shape=(32, 32)))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 32, 32).long())
    with torch.no_grad():
        logits = seg.inference(x, [sample.metainfo])
        full = super(ClassSubsetEncoderDecoder,
                     seg).inference(x, [sample.metainfo])
        pred = seg.predict(x, [sample])[0].pred_sem_seg.data
    assert logits.shape[1] == 149
    torch.testing.assert_close(logits, full[:, seg.keep_classes])
    assert torch.equal(pred[0], logits[0].argmax(0))
