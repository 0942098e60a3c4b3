"""RobustConvNeXt and the RobustPretrained initialiser, checked against timm.

The reference for the robust checkpoints is timm's ConvNeXt with random
weights; for the ConvStem models its ``stem`` is replaced by a module whose
``stem`` attribute is the ConvStem of docs/training.md, built from timm's own
LayerNorm2d, which reproduces the robust checkpoints' keys
``stem.stem.0/1/3/4``.
"""
import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt
from mmseg.registry import MODELS
from timm.layers import LayerNorm2d as TimmLayerNorm2d
from timm.models.convnext import ConvNeXt as TimmConvNeXt

import mmseg_robust  # noqa: F401
from mmseg_robust.models import (RobustConvNeXt, RobustPretrained,
                                 convert_robust_convnext)
from mmseg_robust.models.backbones.robust_convnext import ConvStem
from mmseg_robust.models.initializers import robust_pretrained

DEPTHS = [1, 2, 1, 1]
DIMS = [8, 16, 32, 64]
ARCH = dict(depths=DEPTHS, channels=DIMS)
ATOL = 1e-5


class TimmRobustStem(nn.Module):
    """The robust models' ConvStem as they store it (``stem.stem.*``)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1),
            TimmLayerNorm2d(dim // 2, eps=1e-6), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1),
            TimmLayerNorm2d(dim, eps=1e-6), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


@torch.no_grad()
def randomise_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights of O(1) effect (timm's init makes layer scale 1e-6,
    which would hide the blocks from the comparison)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith('bias'):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:  # norm weights and layer scales
            p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    return model


def make_timm_convnext(stem: str = 'patch',
                       dims=DIMS,
                       depths=DEPTHS,
                       seed: int = 0) -> TimmConvNeXt:
    """A random timm ConvNeXt; ``stem='conv'`` gives the robust layout."""
    torch.manual_seed(seed)
    model = TimmConvNeXt(depths=tuple(depths), dims=tuple(dims), num_classes=5)
    if stem == 'conv':
        model.stem = TimmRobustStem(3, dims[0])
    return randomise_(model, seed).eval()


def save(obj, path) -> str:
    torch.save(obj, str(path))
    return str(path)


def wrap_state_dict(state_dict, wrapping: str):
    """Add the wrapper prefixes / containers the robust checkpoints use."""
    prefixes = {
        'plain': '',
        'module': 'module.',
        'base_model': 'base_model.',
        'module.base_model': 'module.base_model.',
        'base_model.module': 'base_model.module.',
    }
    if wrapping in prefixes:
        return OrderedDict(
            (prefixes[wrapping] + k, v) for k, v in state_dict.items())
    container, prefix = wrapping.split(':')
    return {
        container: OrderedDict((prefix + k, v) for k, v in state_dict.items()),
        'epoch': 3
    }


def load_backbone(checkpoint: str,
                  stem: str = 'patch',
                  **kwargs) -> RobustConvNeXt:
    kwargs.setdefault('out_indices', [0, 1, 2, 3])
    kwargs.setdefault('gap_before_final_norm', False)
    kwargs.setdefault('init_cfg',
                      dict(type='RobustPretrained', checkpoint=checkpoint))
    model = RobustConvNeXt(arch=copy.deepcopy(ARCH), stem=stem, **kwargs)
    model.init_weights()
    return model.eval()


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def timm_models():
    return {stem: make_timm_convnext(stem) for stem in ('patch', 'conv')}


@pytest.fixture(scope='module')
def timm_ckpts(timm_models, tmp_path_factory):
    """Plain timm-layout checkpoints of both stems."""
    root = tmp_path_factory.mktemp('timm_ckpts')
    return {
        stem: save(model.state_dict(), root / f'{stem}.pth')
        for stem, model in timm_models.items()
    }


@pytest.fixture(scope='module')
def image():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- backbone


def test_conv_stem_is_spec_convstem():
    stem = RobustConvNeXt(arch=ARCH, stem='conv').downsample_layers[0]
    assert isinstance(stem, ConvStem)
    conv1, ln1, act1, conv2, ln2, act2 = stem
    assert (conv1.in_channels, conv1.out_channels) == (3, DIMS[0] // 2)
    assert (conv2.in_channels, conv2.out_channels) == (DIMS[0] // 2, DIMS[0])
    for conv in (conv1, conv2):
        assert conv.kernel_size == (3, 3) and conv.stride == (2, 2)
        assert conv.padding == (1, 1) and conv.bias is not None
    for ln, c in ((ln1, DIMS[0] // 2), (ln2, DIMS[0])):
        assert ln.normalized_shape == (c, ) and ln.eps == 1e-6
    assert isinstance(act1, nn.GELU) and isinstance(act2, nn.GELU)


@pytest.mark.parametrize('size', [32, 64])
@pytest.mark.parametrize('gap', [False, True])
def test_conv_stem_output_shapes_equal_patch_stem(size, gap):
    x = torch.rand(1, 3, size, size)
    shapes = {}
    for stem in ('patch', 'conv'):
        model = RobustConvNeXt(
            arch=ARCH,
            stem=stem,
            out_indices=(0, 1, 2, 3),
            gap_before_final_norm=gap).eval()
        shapes[stem] = [tuple(o.shape) for o in model(x)]
    assert shapes['conv'] == shapes['patch']
    if not gap:
        assert shapes['conv'][0] == (1, DIMS[0], size // 4, size // 4)


def test_patch_stem_is_mmpretrain_convnext(image):
    """stem='patch' is mmpretrain's ConvNeXt, parameter for parameter."""
    kwargs = dict(out_indices=[0, 1, 2, 3], gap_before_final_norm=False)
    ours = RobustConvNeXt(arch=ARCH, **kwargs).eval()
    stock = MMPretrainConvNeXt(arch=ARCH, **kwargs)
    stock.eval()  # mmpretrain's ConvNeXt.train returns None
    assert list(ours.state_dict()) == list(stock.state_dict())
    stock.load_state_dict(ours.state_dict())
    for a, b in zip(ours(image), stock(image)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_invalid_stem_arguments():
    with pytest.raises(ValueError, match='stem must be'):
        RobustConvNeXt(arch=ARCH, stem='overlap')
    with pytest.raises(ValueError, match='stem_patch_size'):
        RobustConvNeXt(arch=ARCH, stem='conv', stem_patch_size=2)


def test_conv_stem_frozen_with_stage0():
    model = RobustConvNeXt(arch=ARCH, stem='conv', frozen_stages=1)
    assert not any(p.requires_grad
                   for p in model.downsample_layers[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())


def test_registered_in_mmseg():
    model = MODELS.build(dict(type='RobustConvNeXt', arch=ARCH, stem='conv'))
    assert isinstance(model, RobustConvNeXt)


# ------------------------------------------------------- against timm


@pytest.mark.parametrize('wrapping', [
    'plain', 'module', 'base_model', 'module.base_model', 'base_model.module',
    'state_dict:', 'model:module.', 'state_dict_ema:base_model.module.'
])
@pytest.mark.parametrize('stem', ['patch', 'conv'])
def test_outputs_equal_timm_features(stem, wrapping, timm_models, image,
                                     tmp_path):
    timm_model = timm_models[stem]
    ckpt = save(
        wrap_state_dict(timm_model.state_dict(), wrapping),
        tmp_path / 'ckpt.pth')
    model = load_backbone(ckpt, stem=stem)

    with torch.no_grad():
        ours = model(image)
        feats = timm_model.forward_intermediates(
            image, indices=4, intermediates_only=True)
        assert len(ours) == len(feats) == 4
        for i in range(3):
            # norm0..2 are new (LayerNorm defaults: weight 1, bias 0), so
            # the outputs are timm's stage outputs, layer-normalised
            norm = getattr(model, f'norm{i}')
            assert torch.equal(norm.weight, torch.ones_like(norm.weight))
            assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
            ref = TimmLayerNorm2d(DIMS[i], eps=1e-6)(feats[i])
            torch.testing.assert_close(ours[i], ref, rtol=0, atol=ATOL)
        # norm3 carries timm's final norm (head.norm)
        torch.testing.assert_close(
            ours[3], timm_model.head.norm(feats[3]), rtol=0, atol=ATOL)


def test_classification_features_equal_timm_pre_logits(timm_models, timm_ckpts,
                                                       image):
    """head.norm -> norm3 is the right place: pooled features agree."""
    model = load_backbone(
        timm_ckpts['conv'],
        stem='conv',
        out_indices=-1,
        gap_before_final_norm=True)
    with torch.no_grad():
        ours = model(image)[0]
        ref = timm_models['conv'].forward_head(
            timm_models['conv'].forward_features(image), pre_logits=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=ATOL)


def test_pointwise_convs_as_1x1_convs(timm_ckpts, image):
    """Linear pointwise weights load into linear_pw_conv=False models."""
    linear = load_backbone(timm_ckpts['patch'])
    conv = load_backbone(timm_ckpts['patch'], linear_pw_conv=False)
    assert conv.stages[0][0].pointwise_conv1.weight.dim() == 4
    with torch.no_grad():
        for a, b in zip(linear(image), conv(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_converted_keys_are_the_backbone_keys(timm_models):
    for stem in ('patch', 'conv'):
        info = convert_robust_convnext(
            {'state_dict': timm_models[stem].state_dict()}, return_info=True)
        assert (info.layout, info.stem) == ('timm', stem)
        assert sorted(info.ignored) == ['head.fc.bias', 'head.fc.weight']
        model = RobustConvNeXt(arch=ARCH, stem=stem, out_indices=[0, 1, 2, 3])
        expected = {
            k
            for k in model.state_dict()
            if not k.startswith(('norm0.', 'norm1.', 'norm2.'))
        }
        assert set(info.state_dict) == expected
        plain = convert_robust_convnext(timm_models[stem].state_dict())
        assert isinstance(plain, OrderedDict)
        assert list(plain) == list(info.state_dict)


def test_log_lists_new_norms_and_ignored_keys(timm_ckpts, monkeypatch):
    messages = []
    monkeypatch.setattr(robust_pretrained, 'print_log',
                        lambda msg, **kw: messages.append(msg))
    load_backbone(timm_ckpts['conv'], stem='conv', out_indices=[1, 2])
    (msg, ) = messages
    assert 'loaded' in msg and 'timm layout, conv stem' in msg
    assert 'norm1.weight' in msg and 'norm2.bias' in msg
    # norm3 (from head.norm) is not built with out_indices=[1, 2]
    assert 'head.fc.weight' in msg and 'norm3.weight' in msg


# ------------------------------------------------- mmpretrain layout


def _mmpretrain_classifier_state_dict(seed: int = 0):
    """A whole mmpretrain ImageClassifier (backbone. + head. keys)."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    torch.manual_seed(seed)
    # _scope_: other tests may have made 'mmseg' the default scope
    classifier = PRETRAIN_MODELS.build(
        dict(
            _scope_='mmpretrain',
            type='ImageClassifier',
            backbone=dict(type='ConvNeXt', arch=copy.deepcopy(ARCH)),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=64)))
    return randomise_(classifier, seed).state_dict()


@pytest.mark.parametrize('with_prefix', [True, False])
def test_mmpretrain_layout_round_trip(with_prefix, image, tmp_path):
    state_dict = _mmpretrain_classifier_state_dict()
    if not with_prefix:
        state_dict = OrderedDict((k[len('backbone.'):], v)
                                 for k, v in state_dict.items()
                                 if k.startswith('backbone.'))
    ckpt = save({'state_dict': state_dict, 'meta': {}}, tmp_path / 'c.pth')
    for kwargs in (dict(out_indices=-1, gap_before_final_norm=True),
                   dict(out_indices=[0, 1, 2, 3],
                        gap_before_final_norm=False)):
        ours = load_backbone(ckpt, **kwargs)
        stock = MMPretrainConvNeXt(
            arch=copy.deepcopy(ARCH),
            init_cfg=dict(
                type='Pretrained',
                checkpoint=ckpt,
                prefix='backbone.' if with_prefix else None),
            **kwargs)
        stock.init_weights()
        stock.eval()
        with torch.no_grad():
            for a, b in zip(ours(image), stock(image)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_conv_stem_mmpretrain_layout_round_trip(timm_ckpts, image, tmp_path):
    first = load_backbone(timm_ckpts['conv'], stem='conv')
    ckpt = save(
        {
            'state_dict': {
                'backbone.' + k: v
                for k, v in first.state_dict().items()
            }
        }, tmp_path / 'mm.pth')
    second = load_backbone(ckpt, stem='conv')
    with torch.no_grad():
        for a, b in zip(first(image), second(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------ init ordering


def _assert_backbone_holds(backbone, checkpoint):
    expected = convert_robust_convnext(torch.load(checkpoint))
    state = backbone.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_loader_runs_after_other_initialisers(timm_ckpts):
    """Listed first, RobustPretrained still wins over TruncNormal etc."""
    init_cfg = [
        dict(type='RobustPretrained', checkpoint=timm_ckpts['patch']),
        dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02),
        dict(type='Constant', layer=['LayerNorm'], val=1., bias=0.),
    ]
    model = load_backbone(timm_ckpts['patch'], init_cfg=init_cfg)
    _assert_backbone_holds(model, timm_ckpts['patch'])
    assert model.init_cfg == init_cfg  # restored after init_weights
    # MMEngine's init bookkeeping is cleaned up (top-level backbone)
    assert not any(hasattr(m, '_params_init_info') for m in model.modules())


def test_log_says_the_loaders_ran_last(timm_ckpts, monkeypatch):
    """MMEngine prints a standalone backbone's init report before the load:
    the backbone says that the loaded tensors are what it ends with."""
    from mmseg_robust.models.backbones import robust_convnext
    messages = []
    monkeypatch.setattr(robust_convnext, 'print_log',
                        lambda msg, **kw: messages.append(msg))
    load_backbone(
        timm_ckpts['patch'],
        init_cfg=[
            dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02),
            dict(type='RobustPretrained', checkpoint=timm_ckpts['patch'])
        ])
    (msg, ) = messages
    assert msg.startswith('RobustConvNeXt: the checkpoint loaders '
                          '(RobustPretrained) ran after the other')
    # nothing to say without a loader
    messages.clear()
    RobustConvNeXt(
        arch=copy.deepcopy(ARCH),
        init_cfg=dict(type='TruncNormal', layer='Conv2d')).init_weights()
    assert messages == []


def test_weights_survive_segmentor_init_weights(timm_ckpts):
    init_default_scope('mmseg')
    norm_cfg = dict(type='BN', requires_grad=True)
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[0., 0., 0.],
            std=[255., 255., 255.]),
        backbone=dict(
            type='RobustConvNeXt',
            arch=copy.deepcopy(ARCH),
            stem='conv',
            out_indices=[0, 1, 2, 3],
            gap_before_final_norm=False,
            init_cfg=dict(
                type='RobustPretrained', checkpoint=timm_ckpts['conv'])),
        decode_head=dict(
            type='UPerHead',
            in_channels=DIMS,
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2),
            channels=16,
            dropout_ratio=0.0,
            num_classes=3,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    segmentor = MODELS.build(cfg)
    segmentor.init_weights()
    segmentor.eval()
    _assert_backbone_holds(segmentor.backbone, timm_ckpts['conv'])
    with torch.no_grad():
        out = segmentor(torch.rand(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 3, 16, 16)


def test_initializer_registered_in_root_registry():
    from mmengine.registry import WEIGHT_INITIALIZERS
    assert WEIGHT_INITIALIZERS.get('RobustPretrained') is RobustPretrained


# -------------------------------------------------------------- errors


def _drop_a_key(timm_models):
    state_dict = timm_models['patch'].state_dict()
    del state_dict['stages.1.blocks.1.mlp.fc2.weight']
    return state_dict


@pytest.mark.parametrize(
    'make, match',
    [(_drop_a_key,
      r'not in the checkpoint: stages\.1\.1\.pointwise_conv2\.weight'),
     (lambda _: make_timm_convnext(dims=[16, 32, 64, 128]).state_dict(),
      r'shapes differ: .*checkpoint \(16, 3, 4, 4\) vs model \(8, 3, 4, 4\)'),
     (lambda _: make_timm_convnext(depths=[1, 2, 2, 1]).state_dict(),
      r'no place in .*stages\.2\.1\.')],
    ids=['missing-key', 'wider', 'deeper'])
def test_checkpoint_that_does_not_fit_is_an_error(make, match, timm_models,
                                                  tmp_path):
    ckpt = save(make(timm_models), tmp_path / 'misfit.pth')
    with pytest.raises(RuntimeError, match=match):
        load_backbone(ckpt)


def test_stem_mismatch_is_an_error(timm_ckpts):
    with pytest.raises(
            RuntimeError, match="build RobustConvNeXt with "
            "stem='conv'"):
        load_backbone(timm_ckpts['conv'], stem='patch')
    with pytest.raises(RuntimeError, match="stem='patch'"):
        load_backbone(timm_ckpts['patch'], stem='conv')


def test_unknown_layout_is_an_error(tmp_path):
    ckpt = save({'encoder.layer1.weight': torch.zeros(3)},
                tmp_path / 'resnet.pth')
    with pytest.raises(ValueError, match='Unrecognised checkpoint layout'):
        load_backbone(ckpt)
    with pytest.raises(ValueError, match='found no tensors'):
        convert_robust_convnext({'meta': {'epoch': 1}})


def test_unknown_timm_key_is_an_error(timm_models):
    state_dict = timm_models['patch'].state_dict()
    state_dict['stages.0.blocks.0.mlp.grn.weight'] = torch.zeros(32)
    with pytest.raises(ValueError, match=r'Unrecognised keys .*mlp\.grn'):
        convert_robust_convnext(state_dict)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_backbone(str(tmp_path / 'nope.pth'))


def test_prefix_selects_a_submodule(timm_models, image, tmp_path):
    nested = {
        'encoder.' + k: v
        for k, v in timm_models['patch'].state_dict().items()
    }
    nested['decoder.weight'] = torch.zeros(2)
    ckpt = save({'model': nested}, tmp_path / 'nested.pth')
    init_cfg = dict(
        type='RobustPretrained', checkpoint=ckpt, prefix='encoder.')
    model = load_backbone(ckpt, init_cfg=init_cfg)
    reference = load_backbone(
        save(timm_models['patch'].state_dict(), tmp_path / 'plain.pth'))
    with torch.no_grad():
        for a, b in zip(model(image), reference(image)):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="prefix 'backbone.'"):
        load_backbone(
            ckpt,
            init_cfg=dict(
                type='RobustPretrained', checkpoint=ckpt, prefix='backbone.'))
