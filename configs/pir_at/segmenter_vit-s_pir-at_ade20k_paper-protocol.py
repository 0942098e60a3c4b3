# The paper's released PIR-AT model "Segmenter-ViT-S | ADE20K" (Segmenter,
# ViT-S/16 + mask transformer, 151 classes incl. "other"), evaluated under
# the paper's protocol: 512x512 centre crop, "other" kept as class 0,
# [0, 1] inputs. Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_segmenter_vit-s.py', './_ade20k_paper-protocol.py']
model = dict(decode_head=dict(num_classes=151))
