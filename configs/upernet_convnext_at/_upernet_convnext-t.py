# UPerNet + ConvNeXt-T: model, optimiser and runtime shared by every config in
# this folder. Dataset and schedule come from the other `_*.py` files.
# Model and optimiser are those of MMSeg's
# `mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py`
# (restated here because that file also fixes the dataset; the tests check
# the two stay equal). Clean init = its ImageNet-1k ConvNeXt-T checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/default_runtime.py',
]
# mmpretrain.models: the ConvNeXt backbone; mmseg_robust: compat fixes,
# AdvTrainingHook, RobustConvNeXt and the RobustPretrained initialiser
custom_imports = dict(
    imports=['mmpretrain.models', 'mmseg_robust'], allow_failed_imports=False)

# clean init: downloaded on first use; offline, point
# model.backbone.init_cfg.checkpoint at a local copy (README.md)
checkpoint_file = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'  # noqa
# every config here trains on 512x512 crops (the dataset bases set crop_size)
data_preprocessor = dict(size=(512, 512))
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmpretrain.ConvNeXt',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# AdamW + stage-wise lr decay + AMP, as the stock ConvNeXt-T config
# (tools/train.py --no-amp turns AMP off, e.g. on a CPU).
# Warm-up and PolyLR are in the `_sched_*.py` files (they depend on the
# schedule length).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg={
        'decay_rate': 0.9,
        'decay_type': 'stage_wise',
        'num_layers': 6
    },
    constructor='LearningRateDecayOptimizerConstructor',
    loss_scale='dynamic')

val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# checkpoints every 4000 iterations (+ the last one); AT runs are long, so
# keep only the 3 newest to bound disk use
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=4000,
        max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
