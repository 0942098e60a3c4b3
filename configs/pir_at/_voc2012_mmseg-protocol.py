# PASCAL-VOC 2012 validation under MMSeg's stock protocol: MMSeg's own
# `pascal_voc12.py` dataset config, unchanged: images resized to short side
# 512 (at most 2048 long; cv2 decoding and resize), the boundary label 255
# ignored, whole-image inference, predictions resized back to the original
# image and scored on the full, uncropped label.
_base_ = ['mmseg::_base_/datasets/pascal_voc12.py']
# evaluation configs: no training set (the stock file's train_dataloader
# would otherwise ask for train_cfg and optim_wrapper)
train_dataloader = None
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
