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
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)
# the stock base's clean ImageNet ConvNeXt-B is not used: the converted
# checkpoint carries every weight
checkpoint_file = None

# BN, not SyncBN: evaluation only (identical in eval mode) and it runs on a
# CPU as well
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(mean=[0., 0., 0.], std=[255., 255., 255.])
# the stock UPerNet + ConvNeXt with these changes: the robust ConvNeXt-T with
# the conv stem, no drop path, BN, 21 classes (the dataset configs change it)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='RobustConvNeXt',
        arch='tiny',
        stem='conv',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.0,
        gap_before_final_norm=False,
        init_cfg=None),
    decode_head=dict(
        in_channels=[96, 192, 384, 768], num_classes=21, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=21, norm_cfg=norm_cfg))
