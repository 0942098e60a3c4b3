# UPerNet + ConvNeXt-T on PASCAL-VOC 2012 + SBD ("aug", 10582 training
# images = VOC train 1464 + SBD aug 9118), MMSeg's 512x512 crops, clean
# ImageNet init. Total batch 32 = 4 GPUs x 8 images.
_base_ = [
    './_upernet_convnext-t.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py',
]
model = dict(
    decode_head=dict(num_classes=21), auxiliary_head=dict(num_classes=21))
train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
