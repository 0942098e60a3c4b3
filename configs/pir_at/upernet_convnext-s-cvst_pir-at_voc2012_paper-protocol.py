# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | PASCAL-VOC"
# (UPerNet + ConvNeXt-S with conv stem, 21 classes incl. background),
# evaluated under the paper's protocol: 473x473 centre crop, label 255 as
# background, [0, 1] inputs. Weights: tools/convert_pir_at.py (README.md).
# The ConvNeXt-T config of this dataset and protocol with the ConvNeXt-S.
_base_ = ['./upernet_convnext-t-cvst_pir-at_voc2012_paper-protocol.py']
model = dict(backbone=dict(arch='small'))
