# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | ADE20K"
# (UPerNet + ConvNeXt-S with conv stem, 151 classes incl. "other"),
# evaluated under MMSeg's stock protocol: short side 512, sliding 512x512
# windows (stride 341, as MMSeg's ConvNeXt configs), reduce_zero_label (150
# classes; the model's "other" output is dropped at test time).
# Weights: tools/convert_pir_at.py (README.md).
# The ConvNeXt-T config of this dataset and protocol with the ConvNeXt-S.
_base_ = ['./upernet_convnext-t-cvst_pir-at_ade20k_mmseg-protocol.py']
model = dict(backbone=dict(arch='small'))
