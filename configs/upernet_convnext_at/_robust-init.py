# Robust init (docs/training.md): the backbone starts from an adversarially
# trained (eps 4/255) ImageNet ConvNeXt-T of Singh, Croce & Hein (2023).
# Default: its ConvStem variant ("ConvNeXt-T + CvSt",
# convnext_tiny_cvst_robust.pt), which the paper's authors use for all their
# UPerNet models. For the patch-stem robust ConvNeXt-T add
# `model.backbone.stem=patch` to the --cfg-options that set the checkpoint
# (RobustPretrained refuses a checkpoint whose stem differs from the model's).
#
# A mixin beside a dataset base (`_base_*_robust-init.py`): it cannot set
# `model` itself (MMEngine refuses a key that two sibling bases both set), so
# it names the changes `robust_init` and the dataset file applies them.
robust_init = dict(
    # the robust backbones were trained on [0, 1] RGB inputs without mean/std
    # normalisation: only rescale (and BGR -> RGB)
    data_preprocessor=dict(
        mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True),
    backbone=dict(
        type='RobustConvNeXt',
        stem='conv',
        # _delete_: drop the clean checkpoint's prefix='backbone.'
        init_cfg=dict(
            _delete_=True,
            type='RobustPretrained',
            # placeholder: point it to the downloaded checkpoint with
            # --cfg-options model.backbone.init_cfg.checkpoint=PATH
            checkpoint='checkpoints/convnext_tiny_cvst_robust.pt')))
