# The paper's released PIR-AT model "UperNet-ConvNext-T_CVST | PASCAL-VOC"
# (UPerNet + ConvNeXt-T with conv stem, 21 classes incl. background),
# evaluated under MMSeg's stock protocol: whole image at short side 512,
# label 255 ignored. Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_upernet_convnext-cvst.py', './_voc2012_mmseg-protocol.py']
model = dict(
    backbone=dict(arch='tiny'),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
