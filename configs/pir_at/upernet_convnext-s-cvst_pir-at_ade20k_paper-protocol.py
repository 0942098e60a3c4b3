# The paper's released PIR-AT model "UperNet-ConvNext-S_CVST | ADE20K"
# (UPerNet + ConvNeXt-S with conv stem, 151 classes incl. "other"),
# evaluated under the paper's protocol: 512x512 centre crop, "other" kept as
# class 0, [0, 1] inputs. Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_upernet_convnext-cvst.py', './_ade20k_paper-protocol.py']
model = dict(
    backbone=dict(arch='small'),
    decode_head=dict(num_classes=151),
    auxiliary_head=dict(num_classes=151))
