"""Training schedules for configs, computed from epochs instead of written
out per length.

A config calls :func:`warmup_poly_schedule` after its ``_base_`` line::

    _base_ = ['./_base_ade.py', './_at5.py']
    from mmseg_robust.training.schedules import warmup_poly_schedule  # noqa
    train_cfg, param_scheduler = warmup_poly_schedule(
        epochs=32, warmup_epochs=5, num_images=20210, batch_size=32)

MMEngine drops the imported function from the config, so the config holds
only the two plain values (``cfg.dump()`` writes them out). ``_base_`` must
come first: a config that imports a package before it is read as a
"lazy import" config, which cannot inherit plain ones.
"""
import math
from typing import List, Tuple

__all__ = ['warmup_poly_schedule']


def _positive_int(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            value < (0 if allow_zero else 1):
        bound = '>= 0' if allow_zero else '>= 1'
        raise ValueError(f'{name} must be an integer {bound}, got {value!r}')
    return value


def warmup_poly_schedule(epochs: int,
                         warmup_epochs: int,
                         num_images: int,
                         batch_size: int,
                         val_interval: int = 4000,
                         start_factor: float = 1e-6) -> Tuple[dict, List]:
    """An iteration-based loop of ``epochs`` epochs with a linear warm-up
    and then PolyLR (power 1) to 0.

    Iterations are rounded up: ``max_iters = ceil(epochs * num_images /
    batch_size)`` and the warm-up ends at ``ceil(warmup_epochs *
    num_images / batch_size)`` (docs/training.md; the warm-up lengths are
    those of the paper's released training configs).

    Args:
        epochs (int): Training epochs.
        warmup_epochs (int): Epochs of linear warm-up (0: none; the schedule
            then starts with PolyLR).
        num_images (int): Training images per epoch.
        batch_size (int): Total batch size (all GPUs together).
        val_interval (int): Iterations between validations.
        start_factor (float): Learning-rate factor at the start of the
            warm-up.

    Returns:
        tuple: ``(train_cfg, param_scheduler)`` for the config.

    Raises:
        ValueError: Non-positive counts, or a warm-up at least as long as
            the training.
    """
    epochs = _positive_int('epochs', epochs)
    warmup_epochs = _positive_int('warmup_epochs', warmup_epochs, True)
    num_images = _positive_int('num_images', num_images)
    batch_size = _positive_int('batch_size', batch_size)
    val_interval = _positive_int('val_interval', val_interval)
    if warmup_epochs >= epochs:
        raise ValueError(f'warmup_epochs ({warmup_epochs}) must be smaller '
                         f'than epochs ({epochs})')
    max_iters = math.ceil(epochs * num_images / batch_size)
    warmup = math.ceil(warmup_epochs * num_images / batch_size)
    train_cfg = dict(
        type='IterBasedTrainLoop',
        max_iters=max_iters,
        val_interval=val_interval)
    param_scheduler = [
        dict(
            type='PolyLR',
            power=1.0,
            begin=warmup,
            end=max_iters,
            eta_min=0.0,
            by_epoch=False)
    ]
    if warmup:
        param_scheduler.insert(
            0,
            dict(
                type='LinearLR',
                start_factor=start_factor,
                by_epoch=False,
                begin=0,
                end=warmup))
    return train_cfg, param_scheduler
