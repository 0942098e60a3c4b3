# The PASCAL-VOC base with the robust ImageNet init of `_robust-init.py`.
_base_ = ['./_base_voc.py', './_robust-init.py']
data_preprocessor = _base_.robust_init.data_preprocessor
model = _base_.robust_init
