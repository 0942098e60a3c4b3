# UPerNet + ConvNeXt-T, PASCAL-VOC aug, 512x512 crops:
# AT^2 (PGD-2, eps 4/255) from the ImageNet ConvNeXt-T, 50 epochs.
# Paper: Table 2, 'AT^2 clean init. 50 ep.'.
# 50 ep x 10582 images / 32 per iteration (4 GPUs x 8) -> 16535 iterations.
# Train: bash tools/dist_train.sh CONFIG 4
# SEA evaluation: python tools/test.py CONFIG CKPT --eval sea
# Crop size, test scale, AMP off (CPU), data root, local ImageNet file:
# one option each, see README.md in this folder.
_base_ = [
    './_base_voc.py',
    './_at2.py',
]
from mmseg_robust.training.schedules import warmup_poly_schedule  # noqa: E402

train_cfg, param_scheduler = warmup_poly_schedule(
    epochs=50, warmup_epochs=10, num_images=10582, batch_size=32)
