"""Adversarial attacks on semantic segmentation in plain PyTorch.

``model`` is any callable mapping images ``(B, 3, H, W)`` in [0, 1] to logits
``(B, K, H', W')`` at label resolution. Nothing here imports MMSeg; the
adapter for MMSeg segmentors lives in :mod:`mmseg_robust.adapter`, the
worst-case mIoU (a metric) in :mod:`mmseg_robust.metrics_core`.
"""
from ..deprecation import moved_names
from .accelerate import FastModel, accelerate
from .apgd import APGD, apgd, apgd_checkpoints, apgd_red_eps, red_eps_schedule
from .checks import NORMS, check_eot, check_eps, check_norm, check_radius
from .core import (TRACKED_DEFAULTS, AttackResult, AttackSettings, Ball,
                   Evaluation, Prediction, StartLike, UniformNoise,
                   default_tracked, derive_seed, start_noise)
from .host_sync import HostSyncCounter
from .losses import (LOSS_NAMES, PIXEL_LOSSES, PixelTerms,
                     class_weights_from_counts, pixel_loss)
from .padam import PADAM_LR, PAdam, padam
from .pgd import (L2_PGD_STEP_RATIO, PAPER_PGD_STEP_SIZES, PGD, pgd,
                  pgd_step_size, pgd_train)
from .precision import RESULT_PRECISIONS, AmpLike, resolve_amp
from .sea import (BASELINE_ATTACKS, DEFAULT_SEA_VERSION, RECOMMENDED_ATTACKS,
                  SEA, SEA_LOSSES, SEA_T1_ATTACKS, SEA_VERSIONS,
                  THOROUGH_ATTACKS, THOROUGH_ITER_FACTOR, AttackSpec,
                  SEAResult, SEASettings, SEAVersion, attack_names_help,
                  parse_attack, run_attack, run_sea, sea_clean, sea_curve,
                  sea_version, sea_version_names)
from .square import SQUARE_QUERIES, Square, square_attack, square_queries
from .trust import (TRUST_BUDGETS, TRUST_LEVELS, TrustBudget, TrustCheck,
                    TrustReport, trust_checks)

__all__ = [
    'pixel_loss', 'PIXEL_LOSSES', 'PixelTerms', 'LOSS_NAMES',
    'class_weights_from_counts', 'apgd', 'apgd_red_eps', 'red_eps_schedule',
    'apgd_checkpoints', 'TRACKED_DEFAULTS', 'default_tracked', 'pgd',
    'pgd_train', 'pgd_step_size', 'PAPER_PGD_STEP_SIZES', 'SEA', 'SEAResult',
    'SEA_LOSSES', 'SEA_VERSIONS', 'SEAVersion', 'sea_version', 'AttackSpec',
    'DEFAULT_SEA_VERSION', 'RECOMMENDED_ATTACKS', 'THOROUGH_ATTACKS',
    'THOROUGH_ITER_FACTOR', 'SEA_T1_ATTACKS', 'sea_version_names',
    'parse_attack', 'run_attack', 'attack_names_help', 'BASELINE_ATTACKS',
    'AttackResult', 'Evaluation', 'Prediction', 'StartLike', 'UniformNoise',
    'check_eps', 'start_noise', 'derive_seed', 'AmpLike', 'resolve_amp',
    'RESULT_PRECISIONS', 'FastModel', 'accelerate', 'HostSyncCounter', 'padam',
    'PADAM_LR', 'square_attack', 'square_queries', 'SQUARE_QUERIES', 'NORMS',
    'check_norm', 'check_radius', 'check_eot', 'Ball', 'L2_PGD_STEP_RATIO',
    'trust_checks', 'TrustReport', 'TrustCheck', 'TrustBudget',
    'TRUST_BUDGETS', 'TRUST_LEVELS', 'AttackSettings', 'APGD', 'PGD', 'PAdam',
    'SEASettings', 'run_sea', 'sea_clean', 'sea_curve', 'Square'
]

# moved to mmseg_robust.metrics_core; deprecated here (served lazily, so
# importing the attacks stays free of OpenMMLab)
__getattr__ = moved_names(
    __name__, {'worst_case_miou': 'mmseg_robust.metrics_core'},
    modules=('worst_miou', ))
