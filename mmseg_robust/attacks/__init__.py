"""Adversarial attacks on semantic segmentation in plain PyTorch.

``model`` is any callable mapping images ``(B, 3, H, W)`` in [0, 1] to logits
``(B, K, H', W')`` at label resolution. Nothing here imports MMSeg; the
adapter for MMSeg segmentors lives in :mod:`mmseg_robust.models`.
"""
from .apgd import apgd, apgd_red_eps, red_eps_schedule
from .core import AttackResult, apgd_checkpoints, check_eps, start_noise
from .losses import (LOSS_NAMES, PIXEL_LOSSES, class_weights_from_counts,
                     pixel_loss)
from .pgd import PAPER_PGD_STEP_SIZES, pgd, pgd_step_size, pgd_train
from .sea import (BASELINE_ATTACKS, SEA, SEA_LOSSES, AttackSpec, SEAResult,
                  attack_names_help, parse_attack, run_attack)

__all__ = [
    'pixel_loss', 'PIXEL_LOSSES', 'LOSS_NAMES', 'class_weights_from_counts',
    'apgd', 'apgd_red_eps', 'red_eps_schedule', 'apgd_checkpoints', 'pgd',
    'pgd_train', 'pgd_step_size', 'PAPER_PGD_STEP_SIZES', 'SEA', 'SEAResult', 'SEA_LOSSES',
    'AttackSpec', 'parse_attack', 'run_attack', 'attack_names_help', 'BASELINE_ATTACKS',
    'AttackResult', 'check_eps', 'start_noise'
]
