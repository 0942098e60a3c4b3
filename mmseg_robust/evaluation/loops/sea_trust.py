"""The trust report's part in :class:`SEATestLoop`: its options, the
transfer check's surrogate, and the measurements on each batch that go
into the records (docs/evaluation.md, "Can I trust this number?")."""
import logging
from typing import Callable, List, Optional, Union

import torch
from mmengine.logging import print_log

from mmseg_robust.adapter import AttackBatch, unwrap_segmentor
from mmseg_robust.attacks.trust import (TRUST_BUDGETS, TRUST_LEVELS,
                                        trust_checks)
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation.records import eps_key

__all__ = [
    'check_trust_options', 'load_surrogate_model', 'fit_input', 'measure_trust'
]


def check_trust_options(checks: str,
                        surrogate: Union[None, dict, torch.nn.Module]) -> None:
    """Refuse an unknown ``checks`` level, a surrogate without checks and
    a surrogate dict without ``config`` and ``checkpoint``.

    Args:
        checks (str): The trust report (docs/evaluation.md, "Can I trust
            this number?"): ``'fast'`` (default; a few dozen passes per
            image, the black-box attack on every fourth image by dataset
            index), ``'full'`` (longer runs, radius 1.0 too, the black-box
            attack on every image) or ``'none'``. It runs per batch at the
            largest radius against SEA's per-image worst case there; its
            measurements go into each image's record, and the report over
            the dataset is logged after the tables and written to
            ``summary.json`` (``trust``). With checks on, the report's
            determinism check replaces SEA's own warning about stochastic
            models.
        surrogate (dict | nn.Module, optional): The transfer check's
            surrogate: ``dict(config=..., checkpoint=...)`` (built like the
            evaluated model) or a built segmentor.
    """
    if checks not in TRUST_LEVELS:
        raise ConfigError(f'SEATestLoop: checks={checks!r}: use one of '
                          f'{", ".join(TRUST_LEVELS)}')
    if surrogate is not None and checks == 'none':
        raise ConfigError(
            'a surrogate model is for the transfer check of the trust '
            "report, which checks='none' (--checks none) turns off: "
            'leave out the surrogate or turn the checks on')
    if isinstance(surrogate,
                  dict) and not {'config', 'checkpoint'} <= set(surrogate):
        raise ConfigError('SEATestLoop: surrogate=dict(config=..., '
                          f'checkpoint=...), got {surrogate!r}')


def load_surrogate_model(spec: Union[dict, torch.nn.Module],
                         device: str) -> torch.nn.Module:
    """The transfer check's surrogate segmentor on ``device`` in eval mode
    (built from its config and checkpoint, or the given one)."""
    if isinstance(spec, dict):
        from mmseg_robust.adapter.surrogate import load_surrogate
        return load_surrogate(spec['config'], spec['checkpoint'], device)
    return unwrap_segmentor(spec).to(device).eval()


def fit_input(model, size: tuple):
    """``model`` fed images padded or cropped (right and bottom, where
    the padding is) to ``size``: the surrogate's preprocessor may pad the
    batch to another size than the evaluated model's."""

    def fitted(x):
        h, w = size
        x = x[..., :h, :w]
        if x.shape[-2:] != (h, w):
            x = torch.nn.functional.pad(
                x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
        return model(x)

    fitted.training = False
    return fitted


def measure_trust(sea,
                  level: str,
                  data: dict,
                  batch: AttackBatch,
                  keys: List[int],
                  seeds: List[int],
                  res,
                  records: List[dict],
                  attack_seconds: float,
                  attack_passes: int,
                  surrogate: Optional[torch.nn.Module],
                  trust_fn: Callable = trust_checks) -> None:
    """The trust report's measurements on one batch at the largest
    radius, against SEA's per-image worst case there (where a masked
    model's gap to a black-box or one-step attack is largest, and what
    the headline number is), added to each record as ``trust``.

    Args:
        sea (SEA): The ensemble at the largest radius (its radius, norm,
            ``ignore_index``, precision and EOT are the checks').
        level (str): ``'fast'`` or ``'full'``.
        data (dict): The batch as the dataloader gives it (for the
            surrogate's own preprocessing).
        batch (AttackBatch): The batch as the attacks see it.
        keys (list[int]): The images' dataset indices.
        seeds (list[int]): Their random-start seeds.
        res: SEA's result at the largest radius.
        records (list[dict]): The images' records (changed in place).
        attack_seconds (float): The attacks' time on the batch.
        attack_passes (int): The attacks' gradient passes on the batch.
        surrogate (nn.Module, optional): The transfer check's surrogate.
        trust_fn (callable): The checks
            (:func:`~mmseg_robust.attacks.trust.trust_checks`; the loop
            passes the one its module names, so that it can be replaced
            there).
    """
    budget = TRUST_BUDGETS[level]
    stride = max(int(round(1 / budget.square_share)), 1)
    fitted = None
    if surrogate is not None:
        sur = AttackBatch.from_data(
            surrogate, data, mode='test', ignore_index=sea.ignore_index)
        fitted = fit_input(sur.model, tuple(sur.x.shape[-2:]))
    try:
        report = trust_fn(
            batch.model,
            batch.x,
            batch.y,
            sea.eps,
            level=level,
            worst=res.correct,
            ignore_index=sea.ignore_index,
            seed=seeds,
            amp=sea.amp,
            surrogate=fitted,
            mask=batch.mask,
            square_images=[i for i, k in enumerate(keys) if k % stride == 0],
            norm=sea.norm,
            eot=sea.eot)
    except FloatingPointError as err:
        # non-finite logits under a check's perturbation (e.g. at the
        # large radius): the batch's attack results are kept, its
        # images count as unchecked, and the log says why
        print_log(
            f'trust checks: not run on images {keys}: {err}',
            logger='current',
            level=logging.WARNING)
        return
    # the batch's passes, shared out per image (the attacks' too, for
    # the report's relative cost)
    n = len(records)
    cost = dict(
        grad=report.cost['grad'] / n,
        forward=report.cost['forward'] / n,
        surrogate=report.cost['surrogate'] / n,
        seconds=report.cost['seconds'] / n,
        attack_grad=attack_passes / n,
        attack_seconds=attack_seconds / n)
    for rec, m in zip(records, report.images):
        rec['trust'] = dict(m, eps=eps_key(sea.eps, sea.norm), cost=cost)
        if sea.norm != 'linf':
            rec['trust']['norm'] = sea.norm
