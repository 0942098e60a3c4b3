# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | PASCAL-VOC"
# (UPerNet + ConvNeXt-S with conv stem, 21 classes incl. background),
# evaluated under MMSeg's stock protocol: whole image at short side 512,
# label 255 ignored. Weights: tools/convert_pir_at.py (README.md).
# The ConvNeXt-T config of this dataset and protocol with the ConvNeXt-S.
_base_ = ['./upernet_convnext-t-cvst_pir-at_voc2012_mmseg-protocol.py']
model = dict(backbone=dict(arch='small'))
