# UPerNet + ConvNeXt-T, ADE20K, 512x512 crops:
# AT^2 (PGD-2, eps 4/255) from the robust ImageNet ConvNeXt-T, 128 epochs.
# Paper: Table 8 (App. C.3), AT^2 robust init. 128 ep..
# 128 ep x 20210 images / 32 per iteration (4 GPUs x 8) -> 80840 iterations.
# Robust checkpoint: --cfg-options model.backbone.init_cfg.checkpoint=PATH
# Train: bash tools/dist_train.sh CONFIG 4
# SEA evaluation: python tools/test.py CONFIG CKPT --eval sea
# Crop size, test scale, AMP off (CPU), data root, local ImageNet file:
# one option each, see README.md in this folder.
_base_ = [
    './_base_ade_robust-init.py',
    './_at2.py',
]
from mmseg_robust.training.schedules import warmup_poly_schedule  # noqa: E402

train_cfg, param_scheduler = warmup_poly_schedule(
    epochs=128, warmup_epochs=5, num_images=20210, batch_size=32)
