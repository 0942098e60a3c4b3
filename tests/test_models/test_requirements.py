"""Model families this installation cannot build stop with one sentence
naming the family and what to install, from the API and from the tools."""
import pytest

from mmseg_robust.models import (MissingRequirementError, build_segmentor,
                                 check_model_requirements)
from mmseg_robust.models.requirements import (explain_build_error,
                                              has_mmcv_ops, has_module,
                                              model_requirement_problems)
from mmseg_robust.testing import tiny_segmentor_cfg
from ..conftest import load_tool
from .segmentor_families import (FAMILY_BY_NAME, load_stock_config,
                                 mmseg_config_dir)

needs_no_mmcv_ops = pytest.mark.skipif(
    has_mmcv_ops(), reason='full mmcv installed: CCNet/PSANet build')
needs_no_mmdet = pytest.mark.skipif(
    has_module('mmdet'), reason='mmdet installed: MaskFormers build')


def _model(name):
    return load_stock_config(
        FAMILY_BY_NAME[name], import_custom_modules=False).model


@needs_no_mmcv_ops
@pytest.mark.parametrize('name,family,op',
                         [('ccnet', 'CCNet', 'CrissCrossAttention'),
                          ('psanet', 'PSANet', 'PSAMask')])
def test_mmcv_ops_families(name, family, op):
    with pytest.raises(MissingRequirementError) as info:
        build_segmentor(_model(name))
    msg = str(info.value)
    assert msg.startswith(f'{family} (model.decode_head.type=')
    assert op in msg and 'mmcv._ext' in msg and 'install the full mmcv' in msg
    assert '\n' not in msg
    # raised before anything is built: no registry traceback attached
    assert info.value.__cause__ is None and info.value.__context__ is None


@needs_no_mmdet
@pytest.mark.parametrize('name,family', [('mask2former', 'Mask2Former'),
                                         ('maskformer', 'MaskFormer')])
def test_mmdet_families(name, family):
    with pytest.raises(
            MissingRequirementError,
            match=rf'^{family} \(model.decode_head.type=.*'
            r'MMDetection 3.x \(`mmdet`\): install it'):
        check_model_requirements(_model(name))


def test_buildable_config_has_no_problems():
    assert model_requirement_problems(tiny_segmentor_cfg()) == []
    assert model_requirement_problems(
        _model('pspnet'), dict(imports=['mmpretrain.models'])) == []
    model = build_segmentor(tiny_segmentor_cfg())
    assert type(model).__name__ == 'EncoderDecoder'


def test_san_needs_its_checkpoint_only_for_training():
    """SAN builds, and evaluating a trained checkpoint works without the
    CLIP file; training cannot initialise it without that file (a URL is
    left to MMEngine to download)."""
    from mmengine.config import Config
    model = Config.fromfile(
        f'{mmseg_config_dir()}/san/san-vit-b16_voc12aug-640x640.py').model
    assert model_requirement_problems(model) == []
    (problem, ) = model_requirement_problems(model, training=True)
    assert problem.startswith('SAN (MultimodalEncoderDecoder) needs its CLIP '
                              'checkpoint')
    assert "'pretrain/vit_base_patch16_224.pth' does not exist" in problem
    model.pretrained = None
    (problem, ) = model_requirement_problems(model, training=True)
    assert '(none is set)' in problem
    assert model_requirement_problems(_model('san'), training=True) == []


def test_unknown_errors_are_left_alone():
    assert explain_build_error(KeyError('backbone')) is None
    err = RuntimeError('Please install mmcv-full for CrissCrossAttention ops')
    assert 'mmcv._ext' in explain_build_error(err)
    missing = ModuleNotFoundError("No module named 'mmdet'", name='mmdet')
    assert 'MMDetection' in explain_build_error(missing)
    # a chained cause is found too
    try:
        try:
            raise missing
        except ModuleNotFoundError as inner:
            raise TypeError('BaseModule.__init__() got an unexpected '
                            "keyword argument 'in_channels'") from inner
    except TypeError as outer:
        assert 'MMDetection' in explain_build_error(outer)


@needs_no_mmcv_ops
@needs_no_mmdet
@pytest.mark.parametrize(
    'config,family',
    [
        ('ccnet/ccnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', 'CCNet'),
        # Config.fromfile itself fails here: custom_imports = mmdet.models
        ('mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
         'Mask2Former'),
    ])
def test_tools_print_one_error_line(tmp_path, config, family):
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    main = load_tool('test')
    with pytest.raises(SystemExit) as info:
        main([
            f'{mmseg_config_dir()}/{config}',
            str(ckpt), '--eval', 'sea', '--work-dir',
            str(tmp_path / 'work')
        ])
    msg = str(info.value.code)
    assert msg.startswith(f'error: {family} (model.decode_head.type=')
    assert '\n' not in msg
