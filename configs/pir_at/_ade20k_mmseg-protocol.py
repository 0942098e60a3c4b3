# ADE20K validation under MMSeg's stock protocol: MMSeg's own `ade20k.py`
# dataset config, unchanged: images resized to short side 512 (at most 2048
# long), `reduce_zero_label=True` (label 0 "other" ignored, 150 classes),
# sliding 512x512 windows (set by the model configs), predictions resized
# back and scored on the full label. The released models have 151 outputs
# (class 0 = "other"): the model configs use ClassSubsetEncoderDecoder with
# drop_classes=[0], which removes that output at test time, so predictions
# are among the 150 classes and their ids match the dataset's.
_base_ = ['mmseg::_base_/datasets/ade20k.py']
# evaluation configs: no training set (the stock file's train_dataloader
# would otherwise ask for train_cfg and optim_wrapper)
train_dataloader = None
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
