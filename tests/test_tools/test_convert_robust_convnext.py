"""tools/convert_robust_convnext.py, run in-process through ``main``."""
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch

from mmseg_robust.models import RobustConvNeXt
from tests.test_models.test_robust_convnext import (ARCH, DEPTHS, DIMS,
                                                    load_backbone,
                                                    make_timm_convnext, save,
                                                    wrap_state_dict)

TOOL = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
    'convert_robust_convnext.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('convert_robust_convnext',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures('one_thread')


def _stock_pretrained_backbone(checkpoint, stem, prefix='backbone.'):
    model = RobustConvNeXt(
        arch=dict(ARCH),
        stem=stem,
        out_indices=[0, 1, 2, 3],
        gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix=prefix))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('stem', ['patch', 'conv'])
def test_output_loads_with_stock_pretrained(tool, stem, tmp_path, capsys):
    timm_model = make_timm_convnext(stem, seed=3)
    src = save(
        wrap_state_dict(timm_model.state_dict(),
                        'state_dict:module.base_model.'), tmp_path / 'src.pth')
    dst = str(tmp_path / 'out' / 'dst.pth')
    tool.main([src, dst])
    assert 'timm layout' in capsys.readouterr().out

    converted = torch.load(dst, weights_only=True)
    assert set(converted) == {'state_dict', 'meta'}
    assert all(k.startswith('backbone.') for k in converted['state_dict'])
    meta = converted['meta']
    assert (meta['source_layout'], meta['stem']) == ('timm', stem)
    assert sorted(meta['ignored_keys']) == ['head.fc.bias', 'head.fc.weight']

    stock = _stock_pretrained_backbone(dst, stem)
    robust = load_backbone(src, stem=stem)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(stock(x), robust(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # RobustPretrained reads the converted file as well (mmpretrain layout)
    again = load_backbone(dst, stem=stem)
    with torch.no_grad():
        for a, b in zip(again(x), robust(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_empty_prefix_writes_bare_keys(tool, tmp_path):
    src = save(make_timm_convnext().state_dict(), tmp_path / 'src.pth')
    dst = str(tmp_path / 'dst.pth')
    tool.main([src, dst, '--prefix', ''])
    state_dict = torch.load(dst, weights_only=True)['state_dict']
    model = RobustConvNeXt(arch=dict(ARCH), out_indices=[3])
    assert set(state_dict) == set(model.state_dict())
    model.load_state_dict(state_dict)  # strict


def test_src_prefix(tool, tmp_path):
    state_dict = make_timm_convnext().state_dict()
    nested = OrderedDict(('encoder.' + k, v) for k, v in state_dict.items())
    src = save({'model': nested}, tmp_path / 'src.pth')
    dst = str(tmp_path / 'dst.pth')
    tool.main([src, dst, '--src-prefix', 'encoder.'])
    assert 'backbone.stages.1.1.gamma' in torch.load(dst)['state_dict']


def test_backbone_of_a_released_segmentation_model(tool, tmp_path, capsys):
    """The original ConvNeXt layout, here the backbone inside a released
    PIR-AT UPerNet checkpoint (ConvStem ``downsample_layers.0.stem``)."""
    from tests.pir_at_reference import RefUperNetConvNeXt, randomize_
    ref = randomize_(
        RefUperNetConvNeXt(
            depths=DEPTHS, dims=DIMS, channels=8, aux_channels=8),
        seed=0)
    src = save(ref.state_dict(), tmp_path / 'upernet.pth')
    dst = str(tmp_path / 'backbone.pth')
    tool.main([src, dst])
    assert 'original layout, conv stem' in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)
    meta = converted['meta']
    assert (meta['source_layout'], meta['stem']) == ('original', 'conv')
    assert meta['ignored_keys'] and all(
        k.startswith(('decode_head.', 'auxiliary_head.'))
        for k in meta['ignored_keys'])
    stock = _stock_pretrained_backbone(dst, 'conv')
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(stock(x), ref.backbone(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_missing_source_is_a_clear_error(tool, tmp_path):
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([str(tmp_path / 'nope.pth'), str(tmp_path / 'dst.pth')])
    assert not osp.exists(tmp_path / 'dst.pth')


def test_unrecognised_layout_is_a_clear_error(tool, tmp_path):
    src = save({'layer1.0.conv1.weight': torch.zeros(4, 3, 3, 3)},
               tmp_path / 'resnet.pth')
    with pytest.raises(SystemExit, match='Unrecognised checkpoint layout'):
        tool.main([src, str(tmp_path / 'dst.pth')])
    assert not osp.exists(tmp_path / 'dst.pth')
