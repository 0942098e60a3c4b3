# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | ADE20K"
# (UPerNet + ConvNeXt-S with conv stem, 151 classes incl. "other"),
# evaluated under the paper's protocol: 512x512 centre crop, "other" kept as
# class 0, [0, 1] inputs. Weights: tools/convert_pir_at.py (README.md).
# The ConvNeXt-T config of this dataset and protocol with the ConvNeXt-S.
_base_ = ['./upernet_convnext-t-cvst_pir-at_ade20k_paper-protocol.py']
model = dict(backbone=dict(arch='small'))
