# UPerNet + ConvNeXt with the convolutional stem ("CvSt"), the architecture of
# the paper's released PIR-AT models (authors' UperNetForSemanticSegmentation,
# nmndeep/Robust-Segmentation): ConvNeXt-T (default here; the -s- configs set
# arch='small'), 4 outputs through LayerNorms, UPerNet with 512 channels and
# pooling scales 1, 2, 3, 6, an FCN auxiliary head (256 channels) on stage 2,
# BatchNorm + ReLU in both heads. The auxiliary head is not used at test time
# but is part of the checkpoint, so that it loads with no missing or
# unexpected keys.
#
# Inputs: [0, 1] RGB without mean/std normalisation (the models were trained
# and are evaluated on torchvision's ToTensor() output): the data
# preprocessor only flips BGR -> RGB and divides by 255.
#
# Weights: convert the published file with tools/convert_pir_at.py and pass
# the result to tools/test.py (see README.md in this folder).
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)

# BN, not SyncBN: evaluation only (identical in eval mode) and it runs on a
# CPU as well
norm_cfg = dict(type='BN', requires_grad=True)
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
        type='RobustConvNeXt',
        arch='tiny',
        stem='conv',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.0,
        gap_before_final_norm=False,
        # the converted checkpoint carries every weight
        init_cfg=None),
    decode_head=dict(
        type='UPerHead',
        in_channels=[96, 192, 384, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=384,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
