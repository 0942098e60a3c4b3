# UPerNet + ConvNeXt-T, ADE20K, 512x512 crops:
# clean training from the ImageNet ConvNeXt-T, 128 epochs.
# Paper: Table 3, 'clean 128 ep.'.
# 128 ep x 20210 images / 32 per iteration (4 GPUs x 8) -> 80840 iterations.
# Train: bash tools/dist_train.sh CONFIG 4
# SEA evaluation: python tools/test.py CONFIG CKPT --eval sea
# Crop size, test scale, AMP off (CPU), data root, local ImageNet file:
# one option each, see README.md in this folder.
_base_ = [
    './_base_ade.py',
    './_sched_ade_128ep.py',
]
