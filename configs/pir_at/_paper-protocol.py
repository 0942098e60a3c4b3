# What the paper-protocol dataset configs share (`_ade20k_paper-protocol.py`
# and `_voc2012_paper-protocol.py` add the dataset and its pipeline): batched
# evaluation of the centred crops, mIoU, plain validation and test loops.
test_dataloader = dict(
    # every crop has the same size, so images can be batched
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False))
val_dataloader = test_dataloader
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
val_evaluator = test_evaluator
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
