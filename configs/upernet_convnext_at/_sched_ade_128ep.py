# 128 epochs of ADE20K (20210 training images) at a total batch of 32
# (4 GPUs x 8 images): max_iters = ceil(128 * 20210 / 32) = 80840.
# Linear warm-up for 5 epochs = ceil(5 * 20210 / 32) = 3158 iterations
# (the warm-up of the authors' released ADE20K configs), then PolyLR
# (power 1) to 0 as in MMSeg's ConvNeXt configs.
# Another length: override train_cfg.max_iters, param_scheduler.0.end,
# param_scheduler.1.begin and param_scheduler.1.end (--cfg-options).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80840, val_interval=4000)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=3158),
    dict(
        type='PolyLR',
        power=1.0,
        begin=3158,
        end=80840,
        eta_min=0.0,
        by_epoch=False,
    )
]
