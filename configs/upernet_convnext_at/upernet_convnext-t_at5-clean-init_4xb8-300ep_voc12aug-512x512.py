# UPerNet + ConvNeXt-T, PASCAL-VOC aug, 512x512 crops:
# AT^5 (PGD-5, eps 4/255) from the ImageNet ConvNeXt-T, 300 epochs.
# Paper: Table 2, 'AT^5 clean init. 300 ep.'.
# 300 ep x 10582 images / 32 per iteration (4 GPUs x 8) -> 99207 iterations.
# Train: bash tools/dist_train.sh CONFIG 4
# SEA evaluation: python tools/test.py CONFIG CKPT --eval sea
# Crop size, test scale, AMP off (CPU), data root, local ImageNet file:
# one option each, see README.md in this folder.
_base_ = [
    './_base_voc.py',
    './_sched_voc_300ep.py',
    './_at5.py',
]
