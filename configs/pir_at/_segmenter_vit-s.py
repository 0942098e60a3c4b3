# Segmenter with a ViT-S/16 encoder and a 2-layer mask-transformer decoder,
# the architecture of the paper's released Segmenter (authors' SegMenter,
# after R. Strudel's Segmenter): 384 channels, 12 encoder blocks, 6 heads,
# position embedding for 512x512 inputs (32x32 patches; resized bilinearly
# for other sizes, as the authors' code does), LayerNorm eps 1e-5
# (PyTorch's default, which their code uses), biased patch embedding.
#
# Inputs: [0, 1] RGB without mean/std normalisation, as the UPerNet models.
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)
# the stock base's ImageNet ViT-B is not used: the converted checkpoint
# carries every weight
checkpoint = None

data_preprocessor = dict(mean=[0., 0., 0.], std=[255., 255., 255.])
# LayerNorm eps 1e-5, PyTorch's default (the stock base: 1e-6)
backbone_norm_cfg = dict(_delete_=True, type='LN', eps=1e-5)
# the stock Segmenter (ViT-B) made a ViT-S: 384 channels, 6 heads
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        embed_dims=384,
        num_heads=6,
        mlp_ratio=4,
        qkv_bias=True,
        patch_bias=True,
        drop_path_rate=0.0,
        output_cls_token=False,
        norm_cfg=dict(backbone_norm_cfg),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bilinear',
        init_cfg=None),
    decode_head=dict(
        in_channels=384,
        channels=384,
        num_classes=151,
        num_heads=6,
        embed_dims=384,
        drop_path_rate=0.0,
        norm_cfg=dict(type='LN', eps=1e-5)),
    train_cfg=dict(),
    test_cfg=dict(_delete_=True, mode='whole'))
