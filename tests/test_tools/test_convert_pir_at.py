"""tools/convert_pir_at.py, run in-process through ``main``.

Full-size conversions and their use by ``tools/test.py`` are tested in
``tests/test_configs/test_pir_at_configs.py``; here small networks with the
published layout exercise the command line, its output and its errors.
"""
import os.path as osp
from pathlib import Path

import pytest
import torch

from mmseg_robust.models.pir_at import PIRATConversion
from tests.conftest import load_tool
from tests.pir_at_reference import RefSegmenter, RefUperNetConvNeXt, randomize_

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(
    depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), channels=16, aux_channels=8)
VOC_T = ('configs/pir_at/'
         'upernet_convnext-t-cvst_pir-at_voc2012_paper-protocol.py')


@pytest.fixture(scope='module')
def tool():
    return load_tool('convert_pir_at')


@pytest.fixture(scope='module')
def matching_configs():
    import runpy
    return runpy.run_path(
        str(REPO / 'tools' / 'convert_pir_at.py'),
        run_name='tool_module')['matching_configs']


def _save(obj, path) -> str:
    torch.save(obj, str(path))
    return str(path)


def test_writes_an_mmseg_checkpoint(tool, tmp_path, capsys):
    ref = randomize_(RefUperNetConvNeXt(num_classes=21, **SMALL), seed=0)
    src = _save({
        'module.' + k: v
        for k, v in ref.state_dict().items()
    }, tmp_path / 'src.pth')
    dst = tmp_path / 'out' / 'dst.pth'
    tool([src, str(dst)])
    out = capsys.readouterr().out
    assert 'upernet-convnext (convnext depths (1, 1, 2, 1), conv stem), 21 ' \
        'classes' in out
    assert 'no config in configs/pir_at/ describes this model' in out

    saved = torch.load(dst, weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    state_dict, meta = saved['state_dict'], saved['meta']
    assert meta['model'] == 'upernet-convnext'
    assert (meta['stem'], meta['num_classes']) == ('conv', 21)
    assert meta['depths'] == [1, 1, 2, 1]
    assert 'backbone.downsample_layers.0.3.weight' in state_dict
    assert 'decode_head.conv_seg.weight' in state_dict
    assert 'auxiliary_head.convs.0.bn.running_var' in state_dict
    torch.testing.assert_close(
        state_dict['backbone.stages.2.1.depthwise_conv.weight'],
        ref.backbone.stages[2][1].dwconv.weight.detach(),
        rtol=0,
        atol=0)


def test_segmenter_drops_the_imagenet_head(tool, tmp_path, capsys):
    ref = RefSegmenter(151, layers=2, dim=64, heads=2)
    src = _save(ref.state_dict(), tmp_path / 'segmenter.pth')
    tool([src, str(tmp_path / 'dst.pth')])
    out = capsys.readouterr().out
    assert 'segmenter-vit (vit width 64, 2 layers), 151 classes' in out
    assert 'ignored (not used for segmentation): encoder.head.weight, ' \
        'encoder.head.bias' in out
    meta = torch.load(tmp_path / 'dst.pth', weights_only=True)['meta']
    assert meta['ignored_keys'] == ['encoder.head.weight', 'encoder.head.bias']


def test_config_check_refuses_a_model_that_does_not_fit(
        tool, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    ref = RefUperNetConvNeXt(num_classes=21, **SMALL)
    src = _save(ref.state_dict(), tmp_path / 'small.pth')
    dst = tmp_path / 'dst.pth'
    with pytest.raises(SystemExit) as err:
        tool([src, str(dst), '--config', VOC_T])
    msg = str(err.value)
    assert msg.startswith('error: the converted weights do not fit the '
                          f'model of {VOC_T}')
    assert 'missing keys' in msg  # ConvNeXt-T has more blocks
    assert 'shape mismatches' in msg  # and wider layers
    assert 'detected: upernet-convnext, convnext depths (1, 1, 2, 1), 21' \
        in msg
    assert not osp.exists(dst)


def test_missing_files_are_clear_errors(tool, tmp_path):
    with pytest.raises(SystemExit, match='source checkpoint .* not exist'):
        tool([str(tmp_path / 'nope.pth'), str(tmp_path / 'dst.pth')])
    src = _save(RefUperNetConvNeXt(**SMALL).state_dict(), tmp_path / 's.pth')
    with pytest.raises(SystemExit, match="config file .* does not exist"):
        tool([src, str(tmp_path / 'dst.pth'), '--config', 'nope.py'])
    assert not osp.exists(tmp_path / 'dst.pth')


def test_other_checkpoints_are_refused(tool, tmp_path):
    from tests.test_models.test_robust_convnext import make_timm_convnext
    src = _save(make_timm_convnext().state_dict(), tmp_path / 'timm.pth')
    with pytest.raises(SystemExit) as err:
        tool([src, str(tmp_path / 'dst.pth')])
    msg = str(err.value)
    assert msg.startswith(f'error: cannot convert {src}: not a released '
                          'PIR-AT segmentation checkpoint')
    assert 'tools/convert_robust_convnext.py' in msg
    assert not osp.exists(tmp_path / 'dst.pth')


@pytest.mark.parametrize('model, arch, stem, classes, dataset', [
    ('upernet-convnext', 'convnext-t', 'conv', 21, 'voc2012'),
    ('upernet-convnext', 'convnext-s', 'conv', 151, 'ade20k'),
    ('segmenter-vit', 'vit-s', None, 151, 'ade20k'),
])
def test_matching_configs_exist(matching_configs, model, arch, stem, classes,
                                dataset):
    conv = PIRATConversion({}, model, arch, classes, stem)
    configs = matching_configs(conv)
    assert len(configs) == 2
    for path in configs:
        assert (REPO / path).is_file(), path
        assert f'_{dataset}_' in path


def test_no_matching_config_for_other_models(matching_configs):
    for conv in (PIRATConversion({}, 'upernet-convnext', 'convnext-t', 21,
                                 'patch'),
                 PIRATConversion({}, 'upernet-convnext', 'convnext-t', 19,
                                 'conv')):
        assert matching_configs(conv) == []
