# Demo: a toy-sized UPerNet + ConvNeXt on real microscopy tiles
# (ScratchAssayDataset, made from the PyPI package ndev-sampledata by
# mmseg_robust.datasets.prepare_scratch_assay). Inherits MMSeg's stock
# UPerNet + ConvNeXt model and runtime; everything is shrunk so that training
# and evaluating two models takes minutes on a 2-core CPU.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)

crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
# channel statistics of the training tiles (RGB), see the dataset's meta.json
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[31.9, 135.4, 135.4],
    std=[40.5, 35.4, 35.4],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
channels = [24, 48, 96, 192]
# nuclei are 7% of the pixels: weigh them up, or adversarial training
# (which fits the data more slowly) learns no nucleus at all in 400 steps
loss = dict(
    type='CrossEntropyLoss', use_sigmoid=False, class_weight=[1.0, 1.0, 3.0])
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmpretrain.ConvNeXt',
        # the stock base names an arch ('base'); replace it by a toy one
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], channels=channels),
        drop_path_rate=0.0,
        layer_scale_init_value=1.0,
        init_cfg=None),  # trained from scratch: no checkpoint to download
    decode_head=dict(
        in_channels=channels,
        channels=32,
        num_classes=3,
        norm_cfg=norm_cfg,
        dropout_ratio=0.0,
        loss_decode=loss),
    auxiliary_head=dict(
        in_channels=channels[2],
        channels=16,
        num_classes=3,
        norm_cfg=norm_cfg,
        dropout_ratio=0.0,
        loss_decode=dict(loss, loss_weight=0.4)),
    test_cfg=dict(mode='whole'))

dataset_type = 'ScratchAssayDataset'
data_root = 'work_dirs/demo/data'  # the demo passes the real location
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
# all 10 validation tiles in one batch, in order, without augmentation
val_dataloader = dict(
    train_dataloader,
    batch_size=10,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        train_dataloader['dataset'],
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 400
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=40),
    dict(
        type='PolyLR',
        power=1.0,
        begin=40,
        end=max_iters,
        eta_min=0.0,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
