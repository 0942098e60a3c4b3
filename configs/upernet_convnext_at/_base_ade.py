# UPerNet + ConvNeXt-T on ADE20K (20210 training images), 512x512 crops,
# clean ImageNet init, slide inference as MMSeg's ConvNeXt configs.
# Total batch 32 = 4 GPUs x 8 images.
_base_ = [
    './_upernet_convnext-t.py',
    'mmseg::_base_/datasets/ade20k.py',
]
model = dict(
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
train_dataloader = dict(batch_size=8)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
