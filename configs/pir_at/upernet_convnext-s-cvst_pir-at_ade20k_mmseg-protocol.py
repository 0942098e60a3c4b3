# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | ADE20K"
# (UPerNet + ConvNeXt-S with conv stem, 151 classes incl. "other"),
# evaluated under MMSeg's stock protocol: short side 512, sliding 512x512
# windows (stride 341, as MMSeg's ConvNeXt configs), reduce_zero_label (150
# classes; the model's "other" output is dropped at test time).
# Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_upernet_convnext-cvst.py', './_ade20k_mmseg-protocol.py']
model = dict(
    type='ClassSubsetEncoderDecoder',
    drop_classes=[0],
    backbone=dict(arch='small'),
    decode_head=dict(num_classes=151),
    auxiliary_head=dict(num_classes=151),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
