"""MMSegmentation 1.2.2's stock model families, shrunk to CPU size.

One representative config per family (a directory of MMSeg's ``configs/``),
loaded as shipped, then made tiny: few layers and channels, random weights
(``pretrained``/``init_cfg`` dropped), ``SyncBN`` -> ``BN``, 32-pixel crops.
The number of classes, heads, losses and inference code stay as the stock
config has them. Used by ``test_segmentor_sweep.py`` and documented in
``docs/segmentors.md``.
"""
import copy
import functools
import os.path as osp
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

#: Crop (training size and slide window) of every shrunk model.
CROP = 32

# ResNet-50/101 (and -18) backbones -> ResNet-18 with 8 base channels:
# stage outputs 8, 16, 32, 64 instead of 256, 512, 1024, 2048.
_R18 = dict(backbone=dict(depth=18, stem_channels=8, base_channels=8))
_AUX = dict(auxiliary_head=dict(in_channels=32, channels=8))
# HRNet-18-small (HRNet, OCRNet) -> one block per branch, 4-32 channels
_HR_TINY = dict(
    extra=dict(
        stage1=dict(num_blocks=(1, ), num_channels=(8, )),
        stage2=dict(num_blocks=(1, 1), num_channels=(4, 8)),
        stage3=dict(
            num_modules=1, num_blocks=(1, 1, 1), num_channels=(4, 8, 16)),
        stage4=dict(
            num_modules=1,
            num_blocks=(1, 1, 1, 1),
            num_channels=(4, 8, 16, 32))))


def _vit(**kw):
    """A 4-layer, 32-dim ViT backbone (absolute position embeddings are
    resized to the input by MMSeg)."""
    d = dict(
        img_size=(CROP, CROP),
        embed_dims=32,
        num_layers=4,
        num_heads=2,
        out_indices=(0, 1, 2, 3))
    d.update(kw)
    return d


def _merge(base, override):
    """Deep-merge ``override`` into ``base``: dicts merge, a list of dicts
    merges item by item, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, (list, tuple)) and isinstance(override, list) and \
            override and all(isinstance(o, dict) for o in override) and \
            len(base) == len(override):
        return [_merge(b, o) for b, o in zip(base, override)]
    return copy.deepcopy(override)


@dataclass(frozen=True)
class Family:
    """A stock MMSeg model family and how it is shrunk.

    Attributes:
        name (str): Directory in MMSeg's ``configs/``.
        config (str): The representative config, relative to ``configs/``.
        shrink (dict): Deep-merged into ``cfg.model``.
        fixed_size (bool): The backbone takes one input size only (BEiT /
            MAE relative position bias): whole-image inference is tested at
            the crop size.
        needs (str, optional): What this installation lacks to build it
            (the family is then expected to fail with one sentence).
        randomised (bool): Inference draws random numbers (SegNeXt's
            Hamburger NMF with ``rand_init``): comparisons reseed torch.
        crop (int): Training crop and slide window.
        patch (str, optional): Name of a function of this module applied
            to the built model (a change the config cannot express).
        mmseg_init (bool): Initialise with MMSeg's ``init_weights``. SAN's
            crashes without its CLIP checkpoint and leaves the text encoder
            uninitialised (``torch.empty``); a ``patch`` stands in for the
            checkpoint's weights.
        weighted_ce (bool): Its ``CrossEntropyLoss`` has a ``class_weight``,
            with which MMSeg 1.2.2 crashes on labels containing 255 (ignored
            or padded pixels; open-mmlab/mmsegmentation#3734): train it on
            fully labelled crops of the crop size.
    """
    name: str
    config: str
    shrink: dict = field(default_factory=dict)
    fixed_size: bool = False
    needs: Optional[str] = None
    randomised: bool = False
    crop: int = CROP
    patch: Optional[str] = None
    mmseg_init: bool = True
    weighted_ce: bool = False


def small_lraspp_pool(model: torch.nn.Module) -> None:
    """LR-ASPP (MobileNetV3) pools its 1/8-resolution features with a
    49x49 window fixed in the code, so it needs inputs of at least 392
    pixels; at CPU size a 3x3 window stands in for it."""
    model.decode_head.image_pool[0] = torch.nn.AvgPool2d(3, stride=2)


def normal_init(model: torch.nn.Module) -> None:
    """Every parameter drawn from N(0, 0.3**2): the stand-in for a loaded
    checkpoint where MMSeg cannot initialise a model itself (SAN; with
    smaller weights its random logits hardly depend on the image)."""
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)


def _resnet_family(name, config, head, aux=True, **kw):
    shrink = _merge(_R18, dict(decode_head=head))
    if aux:
        shrink = _merge(shrink, _AUX)
    return Family(name, config, shrink, **kw)


FAMILIES = [
    _resnet_family('ann', 'ann/ann_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=[32, 64], channels=16,
                        project_channels=8)),
    _resnet_family('apcnet', 'apcnet/apcnet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    Family(
        'beit',
        'beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py',
        dict(
            backbone=_vit(),
            neck=dict(embed_dim=32),
            decode_head=dict(in_channels=[32] * 4, channels=16),
            auxiliary_head=dict(in_channels=32, channels=8)),
        fixed_size=True),
    Family(
        'bisenetv1',
        'bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py',
        dict(
            backbone=dict(
                backbone_cfg=dict(stem_channels=8, base_channels=8),
                context_channels=(16, 32, 64),
                spatial_channels=(8, 8, 8, 16),
                out_channels=32),
            decode_head=dict(in_channels=32, channels=16),
            auxiliary_head=[dict(in_channels=16, channels=8)] * 2)),
    Family(
        'bisenetv2',
        'bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py',
        dict(
            backbone=dict(
                detail_channels=(8, 8, 16),
                semantic_channels=(4, 8, 8, 16),
                semantic_expansion_ratio=2,
                bga_channels=16),
            decode_head=dict(in_channels=16, channels=16),
            auxiliary_head=[
                dict(in_channels=4, channels=4),
                dict(in_channels=8, channels=8),
                dict(in_channels=8, channels=8),
                dict(in_channels=16, channels=8)
            ])),
    Family(
        'cgnet',
        'cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py',
        dict(
            backbone=dict(num_channels=(8, 16, 32), num_blocks=(1, 1)),
            decode_head=dict(in_channels=64, channels=64)),
        weighted_ce=True),
    Family(
        'convnext',
        'convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py',
        dict(
            backbone=dict(
                arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])),
            decode_head=dict(in_channels=[8, 16, 32, 64], channels=16),
            auxiliary_head=dict(in_channels=32, channels=8))),
    _resnet_family('danet', 'danet/danet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16, pam_channels=8)),
    Family(
        'ddrnet',
        'ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py',
        dict(
            backbone=dict(channels=8, ppm_channels=16),
            decode_head=dict(in_channels=32, channels=16))),
    _resnet_family('deeplabv3',
                   'deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    _resnet_family(
        'deeplabv3plus',
        'deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py',
        dict(in_channels=64, channels=16, c1_in_channels=8, c1_channels=8)),
    _resnet_family('dmnet', 'dmnet/dmnet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    _resnet_family('dnlnet', 'dnlnet/dnl_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    Family(
        'dpt', 'dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py',
        dict(
            backbone=_vit(),
            decode_head=dict(
                in_channels=(32, ) * 4,
                channels=16,
                embed_dims=32,
                post_process_channels=[8, 16, 16, 32]))),
    _resnet_family(
        'emanet', 'emanet/emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
        dict(in_channels=64, channels=16, ema_channels=16, num_bases=8)),
    _resnet_family('encnet', 'encnet/encnet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=[16, 32, 64], channels=16, num_codes=8)),
    Family(
        'erfnet', 'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
        dict(
            backbone=dict(
                enc_downsample_channels=(4, 8, 16),
                enc_stage_non_bottlenecks=(1, 2),
                enc_non_bottleneck_dilations=(2, 4),
                enc_non_bottleneck_channels=(8, 16),
                dec_upsample_channels=(8, 4),
                dec_stages_non_bottleneck=(1, 1),
                dec_non_bottleneck_channels=(8, 4)),
            decode_head=dict(in_channels=4, channels=8))),
    Family(
        'fastfcn',
        'fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py',
        _merge(
            _R18,
            dict(
                neck=dict(in_channels=(16, 32, 64), mid_channels=16),
                decode_head=dict(in_channels=64, channels=16),
                auxiliary_head=dict(in_channels=32, channels=8)))),
    Family(
        'fastscnn', 'fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py',
        dict(
            backbone=dict(
                downsample_dw_channels=(8, 12),
                global_in_channels=16,
                global_block_channels=(16, 24, 32),
                global_out_channels=32,
                higher_in_channels=16,
                lower_in_channels=32,
                fusion_out_channels=32),
            decode_head=dict(in_channels=32, channels=32),
            auxiliary_head=[
                dict(in_channels=32, channels=8),
                dict(in_channels=16, channels=8)
            ])),
    _resnet_family('fcn', 'fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    _resnet_family('gcnet', 'gcnet/gcnet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    Family(
        'hrnet', 'hrnet/fcn_hr18s_4xb4-80k_ade20k-512x512.py',
        dict(
            backbone=_HR_TINY,
            decode_head=dict(in_channels=[4, 8, 16, 32], channels=16))),
    Family(
        'icnet', 'icnet/icnet_r18-d8_4xb2-80k_cityscapes-832x832.py',
        dict(
            backbone=dict(
                backbone_cfg=dict(stem_channels=8, base_channels=8),
                layer_channels=(16, 64),
                light_branch_middle_channels=8,
                psp_out_channels=16,
                out_channels=(8, 16, 16)),
            neck=dict(in_channels=(8, 16, 16), out_channels=8),
            decode_head=dict(in_channels=8, channels=8),
            auxiliary_head=[dict(in_channels=8, channels=8)] * 2)),
    _resnet_family(
        'isanet', 'isanet/isanet_r50-d8_4xb4-80k_ade20k-512x512.py',
        dict(in_channels=64, channels=16, isa_channels=8, down_factor=(2, 2))),
    Family(
        'knet', 'knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py',
        _merge(
            _R18,
            dict(
                decode_head=dict(
                    kernel_update_head=[
                        dict(
                            num_heads=2,
                            feedforward_channels=32,
                            in_channels=16,
                            out_channels=16,
                            kernel_updator_cfg=dict(
                                in_channels=16,
                                feat_channels=16,
                                out_channels=16))
                    ] * 3,
                    kernel_generate_head=dict(in_channels=64, channels=16)),
                auxiliary_head=dict(in_channels=32, channels=8)))),
    Family(
        'mae',
        'mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        dict(
            backbone=_vit(out_indices=[0, 1, 2, 3]),
            neck=dict(embed_dim=32),
            decode_head=dict(in_channels=[32] * 4, channels=16),
            auxiliary_head=dict(in_channels=32, channels=8)),
        fixed_size=True),
    Family(
        'mobilenet_v2', 'mobilenet_v2/'
        'mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py',
        dict(
            backbone=dict(widen_factor=0.25),
            decode_head=dict(in_channels=80, channels=16),
            auxiliary_head=dict(in_channels=24, channels=8))),
    Family(
        'mobilenet_v3', 'mobilenet_v3/'
        'mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',
        dict(decode_head=dict(channels=16)),
        patch='small_lraspp_pool'),
    _resnet_family('nonlocal_net',
                   'nonlocal_net/nonlocal_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    Family(
        'ocrnet', 'ocrnet/ocrnet_hr18s_4xb4-80k_ade20k-512x512.py',
        dict(
            backbone=_HR_TINY,
            decode_head=[
                dict(in_channels=[4, 8, 16, 32], channels=16),
                dict(in_channels=[4, 8, 16, 32], channels=16, ocr_channels=8)
            ])),
    Family(
        'pidnet',
        'pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
        dict(
            backbone=dict(channels=8, ppm_channels=16),
            decode_head=dict(in_channels=32, channels=16)),
        weighted_ce=True),
    Family(
        'point_rend', 'point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py',
        _merge(
            _R18,
            dict(
                neck=dict(in_channels=[8, 16, 32, 64], out_channels=8),
                decode_head=[
                    dict(in_channels=[8] * 4, channels=8),
                    dict(in_channels=[8], channels=8)
                ]))),
    Family(
        'poolformer',
        'poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py',
        dict(
            backbone=dict(
                arch=dict(
                    layers=[1, 1, 1, 1],
                    embed_dims=[8, 16, 32, 64],
                    mlp_ratios=[2, 2, 2, 2],
                    layer_scale_init_value=1e-5)),
            neck=dict(in_channels=[8, 16, 32, 64], out_channels=8),
            decode_head=dict(in_channels=[8] * 4, channels=8))),
    _resnet_family('pspnet', 'pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py',
                   dict(in_channels=64, channels=16)),
    Family(
        'resnest', 'resnest/resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py',
        dict(
            backbone=dict(depth=50, stem_channels=8, base_channels=4),
            decode_head=dict(in_channels=128, channels=16),
            auxiliary_head=dict(in_channels=64, channels=8))),
    Family(
        'san',
        'san/san-vit-b16_coco-stuff164k-640x640.py',
        dict(
            image_encoder=_vit(num_layers=3, out_indices=(0, 1, 2)),
            text_encoder=dict(
                embed_dims=32,
                num_layers=1,
                num_heads=2,
                output_dims=32,
                templates=['a photo of a {}.']),
            decode_head=dict(
                san_cfg=dict(
                    clip_channels=32,
                    embed_dims=24,
                    num_queries=10,
                    cfg_encoder=dict(
                        num_encode_layer=2, num_heads=2, mlp_ratio=2),
                    cfg_decoder=dict(
                        num_heads=2, embed_channels=16, mlp_channels=16)),
                maskgen_cfg=dict(
                    sos_token_num=10,
                    num_layers=1,
                    embed_dims=32,
                    num_heads=2,
                    out_dims=32))),
        # CLIP sees the image at half resolution: 2 x 2 tokens
        crop=64,
        mmseg_init=False,
        patch='normal_init'),
    Family(
        'segformer', 'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
        dict(
            backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1]),
            decode_head=dict(in_channels=[8, 16, 40, 64], channels=16))),
    Family(
        'segmenter',
        'segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
        dict(
            backbone=_vit(num_layers=2, out_indices=-1),
            decode_head=dict(
                in_channels=32,
                channels=32,
                embed_dims=32,
                num_layers=1,
                num_heads=2))),
    Family(
        'segnext',
        'segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py',
        dict(
            backbone=dict(
                embed_dims=[8, 16, 32, 64],
                depths=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2]),
            decode_head=dict(
                in_channels=[16, 32, 64],
                channels=32,
                ham_channels=32,
                ham_kwargs=dict(MD_R=4))),
        randomised=True),
    Family(
        'sem_fpn', 'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
        _merge(
            _R18,
            dict(
                neck=dict(in_channels=[8, 16, 32, 64], out_channels=8),
                decode_head=dict(in_channels=[8] * 4, channels=8)))),
    Family(
        'setr', 'setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py',
        dict(
            backbone=_vit(),
            decode_head=dict(in_channels=32, channels=16),
            auxiliary_head=[dict(in_channels=32, channels=16)] * 3)),
    Family(
        'stdc', 'stdc/stdc1_4xb12-80k_cityscapes-512x1024.py',
        dict(
            backbone=dict(
                backbone_cfg=dict(channels=(4, 8, 32, 64, 128)),
                last_in_channels=(128, 64),
                out_channels=16,
                ffm_cfg=dict(in_channels=48, out_channels=32)),
            decode_head=dict(in_channels=32, channels=16),
            auxiliary_head=[
                dict(in_channels=16, channels=8),
                dict(in_channels=16, channels=8),
                dict(in_channels=32, channels=8)
            ])),
    Family(
        'swin', 'swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
        'ade20k-512x512.py',
        dict(
            backbone=dict(
                embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
            decode_head=dict(in_channels=[16, 32, 64, 128], channels=16),
            auxiliary_head=dict(in_channels=64, channels=8))),
    Family(
        'twins', 'twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py',
        dict(
            backbone=dict(
                embed_dims=[8, 16, 32, 64],
                num_heads=[1, 1, 1, 1],
                mlp_ratios=[2, 2, 2, 2],
                depths=[1, 1, 1, 1]),
            neck=dict(in_channels=[8, 16, 32, 64], out_channels=8),
            decode_head=dict(in_channels=[8] * 4, channels=8))),
    Family(
        'unet', 'unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py',
        dict(
            backbone=dict(base_channels=4),
            decode_head=dict(in_channels=4, channels=4),
            auxiliary_head=dict(in_channels=8, channels=4))),
    Family(
        'upernet', 'upernet/upernet_r18_4xb4-80k_ade20k-512x512.py',
        _merge(
            _R18,
            dict(
                decode_head=dict(in_channels=[8, 16, 32, 64], channels=16),
                auxiliary_head=dict(in_channels=32, channels=8)))),
    Family(
        'vit', 'vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py',
        dict(
            backbone=_vit(),
            decode_head=dict(in_channels=[32] * 4, channels=16),
            auxiliary_head=dict(in_channels=32, channels=8))),
    # not buildable here: the requirement they lack
    Family(
        'ccnet',
        'ccnet/ccnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
        needs='mmcv._ext'),
    Family(
        'psanet',
        'psanet/psanet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
        needs='mmcv._ext'),
    Family(
        'mask2former',
        'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
        needs='mmdet'),
    Family(
        'maskformer',
        'maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py',
        needs='mmdet'),
    Family('vpd', 'vpd/vpd_sd_4xb8-25k_nyu-480x480.py', needs='ldm'),
]

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def requirement_installed(family: Family) -> bool:
    """Whether this installation has what ``family.needs`` (the check
    :mod:`mmseg_robust.models.requirements` makes: full mmcv's compiled
    ``mmcv._ext``, ``mmdet``, ``ldm``)."""
    from mmseg_robust.models.requirements import has_mmcv_ops, has_module
    if family.needs == 'mmcv._ext':
        return has_mmcv_ops()
    return has_module(family.needs)


@functools.lru_cache(maxsize=None)
def autograd_takes_dnl_inplace_mean() -> bool:
    """Whether this torch's autograd takes what MMSeg 1.2.2's ``DNLHead``
    does (``mmseg/models/decode_heads/dnl_head.py``): subtract the mean in
    place from views of convolution outputs (``theta_x -=
    theta_x.mean(dim=-2, keepdim=True)``), then multiply them. torch 2.1
    refuses it in the backward pass ("modified by an inplace operation");
    torch 2.14 takes it (both tested)."""
    n, c = 2, 4
    x = torch.rand(n, c, 3, 3, requires_grad=True)
    conv = torch.nn.Conv2d(c, c, 1)
    theta_x = conv(x).view(n, c, -1).permute(0, 2, 1)
    phi_x = conv(x).view(n, c, -1)
    theta_x -= theta_x.mean(dim=-2, keepdim=True)
    phi_x -= phi_x.mean(dim=-1, keepdim=True)
    try:
        torch.matmul(theta_x, phi_x).softmax(dim=-1).sum().backward()
    except RuntimeError as err:
        if 'modified by an inplace operation' in str(err):
            return False
        raise
    return True


def known_gradient_failure(family: Family) -> Optional[str]:
    """Why the family's gradients cannot be computed with this torch (a
    bug of MMSeg itself that only some torch versions expose), or None."""
    if family.name == 'dnlnet' and not autograd_takes_dnl_inplace_mean():
        return (f'torch {torch.__version__}: MMSeg 1.2.2\'s DNLHead subtracts '
                'means in place from views (dnl_head.py), which this '
                "torch's autograd refuses; MMSeg's own train_step of DNLNet "
                'fails the same way here (it passes on torch 2.14)')
    return None


def mmseg_config_dir() -> str:
    """MMSeg's installed ``configs/`` (``mmseg/.mim/configs``)."""
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')


def load_stock_config(family: Family, import_custom_modules: bool = True):
    """The family's representative config as MMSeg ships it (a fresh copy;
    parsed once per process)."""
    return copy.deepcopy(_load_config(family.config, import_custom_modules))


@functools.lru_cache(maxsize=None)
def _load_config(path: str, import_custom_modules: bool):
    from mmengine.config import Config
    return Config.fromfile(
        osp.join(mmseg_config_dir(), path),
        import_custom_modules=import_custom_modules)


def _cpu_fix(cfg):
    """SyncBN -> BN, no checkpoints, recursively."""
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            if k == 'init_cfg':
                out[k] = None
            elif k == 'pretrained':
                out[k] = None
            else:
                out[k] = _cpu_fix(v)
        if out.get('type') == 'SyncBN':
            out['type'] = 'BN'
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_cpu_fix(v) for v in cfg)
    return cfg


def tiny_model_cfg(family: Family,
                   mode: str = 'whole',
                   test_pad: Optional[Tuple[int, int]] = None) -> dict:
    """The shrunk model config of a family.

    Args:
        family (Family): The family.
        mode (str): Inference mode, ``'whole'`` or ``'slide'`` (a
            ``family.crop`` window with stride ``3 / 4`` of it).
        test_pad (tuple, optional): Test-time padding of the data
            preprocessor: ``('size_divisor', n)`` or ``('size', (h, w))``.

    Returns:
        ConfigDict: The model config (attribute access, as MMSeg expects).
    """
    from mmengine.config import ConfigDict
    cfg = _load_config(family.config, True)
    model = _merge(_cpu_fix(cfg.model.to_dict()), family.shrink)
    pre = dict(model.get('data_preprocessor') or {})
    crop = family.crop
    pre['size'] = (crop, crop)
    pre.pop('size_divisor', None)
    pre['test_cfg'] = None if test_pad is None else {test_pad[0]: test_pad[1]}
    model['data_preprocessor'] = pre
    test_cfg = {
        k: v
        for k, v in (model.get('test_cfg') or {}).items()
        if k not in ('mode', 'crop_size', 'stride')
    }
    test_cfg['mode'] = mode
    if mode == 'slide':
        test_cfg.update(
            crop_size=(crop, crop), stride=(3 * crop // 4, 3 * crop // 4))
    model['test_cfg'] = test_cfg
    return ConfigDict(model)


def build_tiny(family: Family, seed: int = 0, **kwargs) -> torch.nn.Module:
    """Build :func:`tiny_model_cfg` with random weights, in eval mode."""
    import logging

    from mmengine.logging import MMLogger

    from mmseg_robust.models.requirements import build_segmentor
    cfg = _load_config(family.config, True)
    torch.manual_seed(seed)
    model = build_segmentor(
        tiny_model_cfg(family, **kwargs), cfg.get('custom_imports'))
    if family.mmseg_init:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs each parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    if family.patch is not None:
        globals()[family.patch](model)
    return model.eval()
