"""SEA, the Segmentation Ensemble Attack (SPEC section 5), and the attack
names used across the package (``--attacks`` on the command line)."""
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .apgd import _Best, apgd, apgd_red_eps
from .core import (AttackResult, SeedLike, Timer, check_eps, check_images,
                   check_n_iter, start_noise, subset_model, take_rows,
                   warn_if_training)
from .losses import LOSS_NAMES, argmax_classes, check_loss_name
from .pgd import pgd

__all__ = [
    'SEA', 'SEAResult', 'AttackSpec', 'parse_attack', 'run_attack',
    'SEA_LOSSES', 'BASELINE_ATTACKS', 'ATTACK_METHODS', 'attack_names_help'
]

#: The four losses of SEA, each run with red-eps APGD.
SEA_LOSSES = ('mask_ce', 'bal_ce', 'js', 'mask_sph')

#: Baseline names: PGD with the CE, SegPGD and CosPGD losses.
BASELINE_ATTACKS = {'pgd': 'ce', 'segpgd': 'bal_ce', 'cospgd': 'cossim_ce'}

#: ``method:loss`` prefixes: red-eps APGD (the default for a bare loss
#: name), constant-radius APGD, and PGD.
ATTACK_METHODS = ('red_eps', 'apgd', 'pgd')


def attack_names_help() -> str:
    return (f'a loss name ({", ".join(LOSS_NAMES)}) for red-eps APGD, '
            f'one of {", ".join(BASELINE_ATTACKS)}, or METHOD:LOSS with '
            f'METHOD in {", ".join(ATTACK_METHODS)} (e.g. apgd:ce)')


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an ensemble.

    Attributes:
        name (str): Display name (also the metric key).
        method (str): ``'red_eps'``, ``'apgd'`` or ``'pgd'``.
        loss (str): Pixel loss.
        step_size (float, optional): PGD step size; ``None`` for the paper's.
    """
    name: str
    method: str
    loss: str
    step_size: Optional[float] = None


def parse_attack(spec: Union[str, AttackSpec]) -> AttackSpec:
    """Turn an attack name into an :class:`AttackSpec`.

    ``'mask_ce'`` (any loss) -> red-eps APGD; ``'pgd'``, ``'segpgd'``,
    ``'cospgd'`` -> PGD with CE, balanced CE, CosSim-CE; ``'apgd:js'``,
    ``'pgd:mask_ce'``, ``'red_eps:ce'`` -> that method with that loss.
    """
    if isinstance(spec, AttackSpec):
        return spec
    name = str(spec).strip()
    if name in BASELINE_ATTACKS:
        return AttackSpec(name, 'pgd', BASELINE_ATTACKS[name])
    method, _, loss = name.rpartition(':')
    method = method or 'red_eps'
    if method not in ATTACK_METHODS or loss not in LOSS_NAMES:
        raise ValueError(f'unknown attack {name!r}: use '
                         f'{attack_names_help()}')
    return AttackSpec(name, method, check_loss_name(loss))


def run_attack(spec: Union[str, AttackSpec], model, x: Tensor, y: Tensor,
               eps: float, n_iter: int, **kwargs) -> AttackResult:
    """Run one attack given by name or spec; ``kwargs`` go to the attack."""
    spec = parse_attack(spec)
    if spec.method == 'red_eps':
        return apgd_red_eps(model, x, y, eps, n_iter, loss=spec.loss, **kwargs)
    if spec.method == 'apgd':
        return apgd(model, x, y, eps, n_iter, loss=spec.loss, **kwargs)
    kwargs.setdefault('random_start', False)
    return pgd(
        model,
        x,
        y,
        eps,
        n_iter,
        step_size=spec.step_size,
        loss=spec.loss,
        **kwargs)


@dataclass
class SEAResult:
    """Result of :meth:`SEA.run` on a batch.

    Attributes:
        x_adv (Tensor): Worst case per image over the attacks (lowest pixel
            accuracy; the clean image if no attack beat it).
        pred (Tensor): ``(B, H, W)`` predictions at ``x_adv``.
        correct (Tensor): ``(B,)`` correct valid pixels at ``x_adv``.
        valid (Tensor): ``(B,)`` valid pixels.
        clean_pred (Tensor): ``(B, H, W)`` clean predictions.
        clean_correct (Tensor): ``(B,)`` correct valid pixels when clean.
        attacks (dict): name -> :class:`AttackResult` with ``pred``,
            ``correct``, ``time`` and ``n_evals`` of that attack on the whole
            batch (``x_adv`` is not kept). With ``skip_broken`` the images an
            attack skipped carry the worst case found before it (already zero
            correct pixels); ``extra['ran']`` marks the images it attacked.
        worst_attack (Tensor): ``(B,)`` index into ``attacks`` of the attack
            that gave the worst case, ``-1`` for the clean image.
        eps (float): The radius.
        time (float): Wall-clock seconds of the whole run.
    """
    x_adv: Tensor
    pred: Tensor
    correct: Tensor
    valid: Tensor
    clean_pred: Tensor
    clean_correct: Tensor
    attacks: Dict[str, AttackResult] = field(default_factory=dict)
    worst_attack: Optional[Tensor] = None
    eps: float = 0.0
    time: float = 0.0

    @staticmethod
    def _acc(correct: Tensor, valid: Tensor) -> Tensor:
        acc = correct.double() / valid.double().clamp_min(1)
        return torch.where(valid > 0, acc, torch.full_like(acc, float('nan')))

    @property
    def acc(self) -> Tensor:
        """Worst-case per-image pixel accuracy (NaN without valid pixels)."""
        return self._acc(self.correct, self.valid)

    @property
    def clean_acc(self) -> Tensor:
        """Clean per-image pixel accuracy (NaN without valid pixels)."""
        return self._acc(self.clean_correct, self.valid)

    def attack_acc(self, name: str) -> Tensor:
        """Per-image pixel accuracy of one attack."""
        return self._acc(self.attacks[name].correct, self.valid)


class SEA:
    """Segmentation Ensemble Attack.

    Runs the attacks one after the other and keeps, per image, the
    adversarial image with the lowest pixel accuracy. Images already at zero
    accuracy are not attacked again (``skip_broken``): the worst case is the
    same as running every attack on every image, for less time.

    Args:
        model: Callable ``x -> logits`` at label resolution (eval mode).
        eps (float): l_inf radius, e.g. ``8/255``.
        n_iter (int): Iterations per attack (300 in the paper).
        losses (Sequence[str]): Losses of the red-eps APGD runs.
        ignore_index (int): Ignored label.
        seed (int | Sequence[int]): Random-start seed (or one per image).
        attacks (Sequence[str | AttackSpec], optional): Attacks to run
            instead of red-eps APGD with ``losses``; names as in
            :func:`parse_attack` (e.g. ``'segpgd'``, ``'apgd:ce'``).
        skip_broken (bool): Do not attack images already at zero accuracy.
        amp (bool | torch.dtype): Autocast the model calls.
        random_start (bool): Random start of the APGD attacks (PGD
            baselines start at ``x`` as in their papers).
        check_model (bool): On the first run, warn if the model is in
            training mode or its outputs are not deterministic.
        callback (callable, optional): Called as ``callback(name, result,
            worst_correct)`` after each attack, e.g. to log progress.
    """

    def __init__(self,
                 model,
                 eps: float,
                 n_iter: int = 300,
                 losses: Sequence[str] = SEA_LOSSES,
                 ignore_index: int = 255,
                 seed: SeedLike = 0,
                 attacks: Optional[Sequence[Union[str, AttackSpec]]] = None,
                 skip_broken: bool = True,
                 amp: Union[bool, torch.dtype] = False,
                 random_start: bool = True,
                 check_model: bool = True,
                 callback: Optional[Callable] = None):
        self.model = model
        self.eps = check_eps(eps)
        self.attacks: List[AttackSpec] = [
            parse_attack(a) for a in (attacks if attacks is not None else [
                check_loss_name(loss) for loss in losses
            ])
        ]
        if not self.attacks:
            raise ValueError('SEA needs at least one attack')
        names = [a.name for a in self.attacks]
        if len(set(names)) != len(names):
            raise ValueError(f'attack names must be unique, got {names}')
        min_iter = 3 if any(a.method == 'red_eps'
                            for a in self.attacks) else 1
        self.n_iter = check_n_iter(n_iter, min_iter,
                                   'n_iter (red-eps APGD needs >= 3)')
        self.ignore_index = ignore_index
        self.seed = seed
        self.skip_broken = skip_broken
        self.amp = amp
        self.random_start = random_start
        self.check_model = check_model
        self.callback = callback
        self._checked = False

    @property
    def names(self) -> List[str]:
        return [a.name for a in self.attacks]

    def _check_model(self, x: Tensor, logits: Tensor) -> None:
        self._checked = True
        warn_if_training(self.model)
        with torch.no_grad():
            again = self.model(x).float()
        if not torch.allclose(logits, again, rtol=1e-4, atol=1e-5):
            warnings.warn(
                'the model gives different outputs for the same input: '
                'randomised models need attacks with expectation over '
                'transformations; SEA results on them are unreliable.',
                stacklevel=3)

    @torch.no_grad()
    def clean(self, x: Tensor, y: Tensor):
        """Clean ``(pred, correct, valid)`` of a batch (checks the model on
        the first call)."""
        return self._clean(x, y)

    @torch.no_grad()
    def _clean(self, x: Tensor, y: Tensor):
        logits = self.model(x).float()
        if self.check_model and not self._checked:
            self._check_model(x, logits)
        valid = y != self.ignore_index
        pred = argmax_classes(logits)
        correct = ((pred == y) & valid).flatten(1).sum(1)
        return pred, correct, valid.flatten(1).sum(1)

    def run(self,
            x: Tensor,
            y: Tensor,
            mask: Optional[Tensor] = None,
            seed: Optional[SeedLike] = None,
            clean: Optional[tuple] = None) -> SEAResult:
        """Attack a batch.

        Args:
            x (Tensor): ``(B, 3, H, W)`` clean images in [0, 1].
            y (Tensor): ``(B, H', W')`` labels.
            mask (Tensor, optional): Pixels that may be perturbed.
            seed (int | Sequence[int], optional): Overrides the seed given at
                construction (e.g. one seed per dataset index).
            clean (tuple, optional): Precomputed clean ``(pred, correct)``,
                e.g. when the same batch is attacked at several radii.

        Returns:
            SEAResult: Worst case and per-attack results.
        """
        with Timer() as timer:
            mask = check_images(x, y, mask)
            x = x.detach().float()
            y = y.to(x.device).long()
            if clean is None:
                clean_pred, clean_correct, valid = self._clean(x, y)
            else:
                clean_pred, clean_correct = (t.to(x.device) for t in clean)
                valid = (y != self.ignore_index).flatten(1).sum(1)
            worst = _Best(x, clean_pred, clean_correct)
            worst_attack = torch.full_like(clean_correct, -1)
            seed = self.seed if seed is None else seed
            noise = start_noise(x, seed) if self.random_start else None
            results: Dict[str, AttackResult] = {}
            for k, spec in enumerate(self.attacks):
                todo = (worst.correct if self.skip_broken else
                        clean_correct) > 0
                idx = torch.nonzero(todo).flatten()
                pred = worst.pred.clone()
                correct = worst.correct.clone()
                res = None
                if idx.numel() and self.eps > 0:
                    # take_rows: no copies for the whole batch (the usual
                    # case for the first attack)
                    kwargs = dict(
                        ignore_index=self.ignore_index,
                        amp=self.amp,
                        mask=take_rows(mask, idx),
                        clean=(take_rows(clean_pred, idx),
                               take_rows(clean_correct, idx)))
                    if spec.method != 'pgd':
                        kwargs.update(
                            random_start=self.random_start,
                            noise=take_rows(noise, idx))
                    res = run_attack(spec, subset_model(self.model, idx),
                                     take_rows(x, idx), take_rows(y, idx),
                                     self.eps, self.n_iter, **kwargs)
                    pred[idx] = res.pred
                    correct[idx] = res.correct
                    better = worst.update(idx, res.x_adv, res.pred,
                                          res.correct)
                    worst_attack[idx[better]] = k
                elif self.eps == 0:
                    pred, correct = clean_pred.clone(), clean_correct.clone()
                results[spec.name] = AttackResult(
                    x_adv=None,
                    pred=pred,
                    correct=correct,
                    valid=valid,
                    n_evals=res.n_evals if res is not None else 0,
                    time=res.time if res is not None else 0.0,
                    extra=dict(ran=todo))
                if self.callback is not None:
                    self.callback(spec.name, results[spec.name],
                                  worst.correct)
        return SEAResult(
            x_adv=worst.x,
            pred=worst.pred,
            correct=worst.correct,
            valid=valid,
            clean_pred=clean_pred,
            clean_correct=clean_correct,
            attacks=results,
            worst_attack=worst_attack,
            eps=self.eps,
            time=timer.elapsed)
