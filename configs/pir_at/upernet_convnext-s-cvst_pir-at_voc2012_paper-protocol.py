# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | PASCAL-VOC"
# (UPerNet + ConvNeXt-S with conv stem, 21 classes incl. background),
# evaluated under the paper's protocol: 473x473 centre crop, label 255 as
# background, [0, 1] inputs. Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_upernet_convnext-cvst.py', './_voc2012_paper-protocol.py']
model = dict(
    backbone=dict(arch='small'),
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
