# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | PASCAL-VOC"
# (UPerNet + ConvNeXt-S with conv stem, 21 classes incl. background),
# evaluated under MMSeg's stock protocol: whole image at short side 512,
# label 255 ignored. Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_upernet_convnext-cvst.py', './_voc2012_mmseg-protocol.py']
model = dict(
    backbone=dict(arch='small'),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
