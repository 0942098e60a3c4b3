# Segmenter with a ViT-S/16 encoder and a 2-layer mask-transformer decoder,
# the architecture of the paper's released Segmenter (authors' SegMenter,
# after R. Strudel's Segmenter): 384 channels, 12 encoder blocks, 6 heads,
# position embedding for 512x512 inputs (32x32 patches; resized bilinearly
# for other sizes, as the authors' code does), LayerNorm eps 1e-5
# (PyTorch's default, which their code uses), biased patch embedding.
#
# Inputs: [0, 1] RGB without mean/std normalisation, as the UPerNet models.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[0., 0., 0.],
    std=[255., 255., 255.],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='VisionTransformer',
        img_size=(512, 512),
        patch_size=16,
        in_channels=3,
        embed_dims=384,
        num_layers=12,
        num_heads=6,
        mlp_ratio=4,
        qkv_bias=True,
        patch_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
        with_cls_token=True,
        output_cls_token=False,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-5),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bilinear',
        init_cfg=None),
    decode_head=dict(
        type='SegmenterMaskTransformerHead',
        in_channels=384,
        channels=384,
        num_classes=151,
        num_layers=2,
        num_heads=6,
        embed_dims=384,
        dropout_ratio=0.0,
        drop_path_rate=0.0,
        norm_cfg=dict(type='LN', eps=1e-5),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
