# 50 epochs of PASCAL-VOC aug (10582 training images) at a total batch of 32
# (4 GPUs x 8 images): max_iters = ceil(50 * 10582 / 32) = 16535.
# Linear warm-up for 10 epochs = ceil(10 * 10582 / 32) = 3307 iterations
# (the warm-up of the authors' released PASCAL-VOC configs), then PolyLR
# (power 1) to 0 as in MMSeg's ConvNeXt configs.
# Another length: override train_cfg.max_iters, param_scheduler.0.end,
# param_scheduler.1.begin and param_scheduler.1.end (--cfg-options).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=16535, val_interval=4000)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=3307),
    dict(
        type='PolyLR',
        power=1.0,
        begin=3307,
        end=16535,
        eta_min=0.0,
        by_epoch=False,
    )
]
