# The paper's released PIR-AT model "Segmenter-ViT-S | ADE20K" (Segmenter,
# ViT-S/16 + mask transformer, 151 classes incl. "other"), evaluated under
# MMSeg's stock protocol: short side 512, sliding 512x512 windows (stride
# 480, as MMSeg's Segmenter configs), reduce_zero_label (150 classes; the
# model's "other" output is dropped at test time).
# Weights: tools/convert_pir_at.py (README.md).
_base_ = ['./_segmenter_vit-s.py', './_ade20k_mmseg-protocol.py']
model = dict(
    type='ClassSubsetEncoderDecoder',
    drop_classes=[0],
    decode_head=dict(num_classes=151),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(480, 480)))
