"""SEA, the Segmentation Ensemble Attack (the paper's Section 3.3,
docs/attacks.md), its published versions, and the attack names used across
the package (``--attacks`` on the command line)."""
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .apgd import apgd, apgd_red_eps, red_eps_schedule
from .checks import (check_eot, check_images, check_n_iter, check_norm,
                     check_radius, warn_if_training)
from .core import (TRACKED_DEFAULTS, AttackResult, Ball, Prediction, SeedLike,
                   StartLike, Timer, UniformNoise, WorstCase, derive_seed,
                   start_noise, subset_model, take_rows)
from .losses import LOSS_NAMES, argmax_classes, check_loss_name
from .padam import padam
from .pgd import pgd
from .precision import (RESULT_PRECISIONS, AmpLike, amp_name, autocast_to,
                        check_amp, resolve_amp)
from .square import SQUARE_LOSSES, STRIPES, square_attack, square_queries

__all__ = [
    'SEA', 'SEASettings', 'SEAResult', 'run_sea', 'sea_clean', 'sea_curve',
    'AttackSpec', 'parse_attack', 'run_attack', 'SEA_LOSSES', 'SEA_VERSIONS',
    'SEAVersion', 'BASELINE_ATTACKS', 'ATTACK_METHODS', 'attack_names_help',
    'sea_version', 'sea_version_names', 'DEFAULT_SEA_VERSION',
    'SEA_VERSION_ALIASES', 'RECOMMENDED_ATTACKS', 'THOROUGH_ATTACKS',
    'THOROUGH_ITER_FACTOR', 'SEA_T1_ATTACKS'
]

#: The four losses of SEA-2023 (the paper), each run with red-eps APGD.
SEA_LOSSES = ('mask_ce', 'bal_ce', 'js', 'mask_sph')

#: Baseline names: PGD with the CE, SegPGD and CosPGD losses.
BASELINE_ATTACKS = {'pgd': 'ce', 'segpgd': 'bal_ce', 'cospgd': 'cossim_ce'}

#: ``method:loss`` prefixes: red-eps APGD (the default for a bare loss
#: name), constant-radius APGD, PGD, PAdam (projected Adam) and the
#: black-box square attack (``square`` alone: its ``mask_ce`` tie-break).
ATTACK_METHODS = ('red_eps', 'apgd', 'pgd', 'padam', 'square')


@dataclass(frozen=True)
class SEAVersion:
    """A version of SEA: a published one or one of this package's presets
    (docs/attacks.md, "Versions and presets").

    Attributes:
        name (str): ``'SEA-2023'``, ``'SEA-2024'``, ``'SEA-R1'``,
            ``'SEA-T2'``, ``'SEA-T1'``.
        attacks (tuple): Attack names (see :func:`parse_attack`).
        n_iter (int): Iterations per attack at the default budget.
        reference (str): Where it was published or chosen.
        iter_factor (float): Each attack runs ``iter_factor`` times the
            iterations asked for (``n_iter`` or the one given to
            :class:`SEA` / ``--n-iter``): SEA-T2 spends its 2.5 x passes on
            longer runs of SEA-R1's members. 1 for the other versions, whose
            ``n_iter`` is the paper's iterations per attack.
    """
    name: str
    attacks: Tuple[str, ...]
    n_iter: int
    reference: str
    iter_factor: float = 1.0

    def iterations(self, n_iter: Optional[int] = None) -> int:
        """Iterations each attack runs for ``n_iter`` asked (default: the
        version's; checked before the factor applies, so no 2.5 x 'abc')."""
        asked = self.n_iter if n_iter is None else check_n_iter(n_iter)
        if self.iter_factor == 1:
            return asked
        return max(1, int(self.iter_factor * asked + 0.5))


#: SEA-R1, the recommended preset (the default): red-eps ``mask_ce``,
#: ``js`` and ``cos`` and constant-radius ``mask_ce``, SEA-2023's passes
#: (4 x ``n_iter``); chosen by measurement so that its per-image worst case
#: is at or below SEA-2023, SEA-2024 and each of their losses alone under
#: either schedule (docs/attacks.md, "Versions and presets"). No member
#: needs class weights.
RECOMMENDED_ATTACKS = ('mask_ce', 'js', 'cos', 'apgd:mask_ce')
#: SEA-T2, the thorough preset for final numbers (``thorough``), 2.5 x
#: SEA-2023's passes: SEA-R1's members with 2.5 x the iterations each (750
#: at the default 300). Longer runs found more than restarts and more
#: losses at the same passes (docs/attacks.md, "Versions and presets").
THOROUGH_ATTACKS = RECOMMENDED_ATTACKS
#: How many times the iterations asked for SEA-T2's attacks run.
THOROUGH_ITER_FACTOR = 2.5
#: SEA-T1, the first thorough preset (kept so that its numbers can be
#: repeated): SEA-R1, SEA-R1 again from second random starts, red-eps
#: ``mask_sph`` and constant-radius ``cos``, ten runs of ``n_iter``.
SEA_T1_ATTACKS = RECOMMENDED_ATTACKS + tuple(
    f'{a}#2' for a in RECOMMENDED_ATTACKS) + ('mask_sph', 'apgd:cos')

#: The versions by key: ``'R1'`` (SEA-R1, recommended, the default),
#: ``'T2'`` (SEA-T2, thorough), ``'T1'`` (SEA-T1, the first thorough
#: preset), ``'2023'`` (the paper) and ``'2024'`` (the authors' ECCV'24
#: version; ``mask_ce_bal`` weighs classes by their inverse frequency in
#: the training labels). The published ones keep the papers' protocols
#: exactly; a preset's name never changes what it runs.
SEA_VERSIONS: Dict[str, SEAVersion] = {
    'R1':
    SEAVersion(
        'SEA-R1', RECOMMENDED_ATTACKS, 300,
        'mmseg_robust, recommended (docs/attacks.md, "Versions and presets")'),
    'T2':
    SEAVersion(
        'SEA-T2', THOROUGH_ATTACKS, 300,
        'mmseg_robust, thorough (docs/attacks.md, "Versions and presets")',
        THOROUGH_ITER_FACTOR),
    'T1':
    SEAVersion(
        'SEA-T1', SEA_T1_ATTACKS, 300,
        'mmseg_robust, the first thorough preset (docs/attacks.md, '
        '"Versions and presets")'),
    '2023':
    SEAVersion('SEA-2023', SEA_LOSSES, 300,
               'Croce, Singh, Hein 2023 (this paper)'),
    '2024':
    SEAVersion('SEA-2024', ('mask_ce_bal', 'mask_ce', 'js'), 300,
               'Croce, Singh, Hein, ECCV 2024'),
}
#: Other names of the presets (``--sea-version recommended``).
SEA_VERSION_ALIASES = {'RECOMMENDED': 'R1', 'THOROUGH': 'T2'}
#: The version of ``SEA(...)``, ``SEATestLoop`` and ``--eval sea`` when
#: none is given.
DEFAULT_SEA_VERSION = 'R1'


def sea_version_names() -> str:
    """The accepted version names, for error messages and help."""
    return ('recommended (R1, the default), thorough (T2), T1 (the first '
            'thorough preset), 2023 (the paper), 2024')


def sea_version(version: Union[str, int, None] = None) -> SEAVersion:
    """The :class:`SEAVersion` for ``'recommended'``, ``'R1'``,
    ``'SEA-T2'``, ``'2023'``, ``'SEA-2024'``, ``2024``... (``None``: the
    default, :data:`DEFAULT_SEA_VERSION`)."""
    if version is None:
        return SEA_VERSIONS[DEFAULT_SEA_VERSION]
    key = str(version).strip().upper()
    for prefix in ('SEA-', 'SEA'):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    key = SEA_VERSION_ALIASES.get(key, key)
    if key not in SEA_VERSIONS:
        raise ValueError(f'unknown SEA version {version!r}: use one of '
                         f'{sea_version_names()}')
    return SEA_VERSIONS[key]


def attack_names_help() -> str:
    return (f'a loss name ({", ".join(LOSS_NAMES)}) for red-eps APGD, '
            f'one of {", ".join(BASELINE_ATTACKS)}, square (black-box), or '
            f'METHOD:LOSS with METHOD in {", ".join(ATTACK_METHODS)} (e.g. '
            'apgd:ce, padam:cos, square:margin); '
            'APGD attacks take @TRACKED to choose the objective that '
            'drives the step size (e.g. mask_ce@mask_ce; default CE, '
            'mask_sph itself)')


@dataclass(frozen=True)
class AttackSpec:
    """One attack of an ensemble.

    Attributes:
        name (str): Display name (also the metric key).
        method (str): One of :data:`ATTACK_METHODS` (``'red_eps'``,
            ``'apgd'``, ``'pgd'``, ``'padam'``, ``'square'``).
        loss (str): Pixel loss.
        step_size (float, optional): PGD step size; ``None`` for the paper's.
        track (str, optional): Tracked objective of the APGD attacks
            (docs/attacks.md); ``None`` for PGD.
        restart (int): ``K`` of a name ending in ``#K`` (``K >= 2``): the
            same attack from its K-th random start (seeded by the name),
            ``0`` for the first.
    """
    name: str
    method: str
    loss: str
    step_size: Optional[float] = None
    track: Optional[str] = None
    restart: int = 0


def parse_attack(spec: Union[str, AttackSpec]) -> AttackSpec:
    """Turn an attack name into an :class:`AttackSpec`.

    ``'mask_ce'`` (any loss) -> red-eps APGD; ``'pgd'``, ``'segpgd'``,
    ``'cospgd'`` -> PGD with CE, balanced CE, CosSim-CE; ``'apgd:js'``,
    ``'pgd:mask_ce'``, ``'red_eps:ce'``, ``'padam:cos'``,
    ``'square:margin'`` -> that method with that loss (``'square'``: the
    black-box square attack with its ``mask_ce`` tie-break). ``NAME#K``
    (``K >= 2``) is attack ``NAME`` from its K-th random start (seeded by
    the whole name; at a chained radius too, see :meth:`SEA._start`). APGD
    attacks track :func:`~.core.default_tracked` (the attacked loss where
    it names none) unless the name ends in ``@TRACKED``
    (``'mask_ce@mask_ce'`` tracks the attacked loss); PGD, PAdam and the
    square attack track nothing.
    """
    if isinstance(spec, AttackSpec):
        return spec
    name = str(spec).strip()
    base, hash_, restart = name.partition('#')
    if hash_:
        if not restart.isdigit() or str(
                int(restart)) != restart or int(restart) < 2:
            raise ValueError(f'unknown attack {name!r}: a restart is '
                             'NAME#K with K >= 2 (the bare NAME is the first '
                             'start; e.g. apgd:mask_ce#2)')
        first = parse_attack(base)
        if first.method == 'pgd':
            raise ValueError(f'unknown attack {name!r}: PGD starts at the '
                             'clean image, so a restart would repeat it')
        return replace(first, name=name, restart=int(restart))
    if name in BASELINE_ATTACKS:
        return AttackSpec(name, 'pgd', BASELINE_ATTACKS[name])
    if name == 'square':
        return AttackSpec(name, 'square', 'mask_ce')
    body, at, track = name.partition('@')
    method, _, loss = body.rpartition(':')
    if method == 'square':
        # 'margin' is the square attack's own objective, not a pixel loss
        if at or loss not in SQUARE_LOSSES:
            raise ValueError(f'unknown attack {name!r}: use '
                             f'{attack_names_help()}')
        return AttackSpec(name, 'square', loss)
    method = method or 'red_eps'
    untracked = method in ('pgd', 'padam')
    if method not in ATTACK_METHODS or loss not in LOSS_NAMES or (
            at and (untracked or track not in LOSS_NAMES)):
        raise ValueError(f'unknown attack {name!r}: use '
                         f'{attack_names_help()}')
    if untracked:
        return AttackSpec(name, method, loss)
    return AttackSpec(
        name,
        method,
        check_loss_name(loss),
        track=track if at else TRACKED_DEFAULTS[loss])


def run_attack(spec: Union[str, AttackSpec], model, x: Tensor, y: Tensor,
               eps: float, n_iter: int, **kwargs) -> AttackResult:
    """Run one attack given by name or spec; ``kwargs`` go to the attack
    (PGD starts at the clean image unless ``start`` says otherwise, PAdam
    at random, the square attack at its stripes unless ``start`` gives
    points; its ``n_iter`` iterations become :func:`~.square.square_queries`
    queries of the same compute)."""
    spec = parse_attack(spec)
    if spec.method == 'square':
        start = kwargs.pop('start', None)
        return square_attack(
            model,
            x,
            y,
            eps,
            square_queries(n_iter),
            loss=spec.loss,
            start=start if isinstance(start, Tensor) else STRIPES,
            **kwargs)
    if spec.method == 'red_eps':
        return apgd_red_eps(
            model,
            x,
            y,
            eps,
            n_iter,
            loss=spec.loss,
            track_loss=spec.track,
            **kwargs)
    if spec.method == 'apgd':
        return apgd(
            model,
            x,
            y,
            eps,
            n_iter,
            loss=spec.loss,
            track_loss=spec.track,
            **kwargs)
    if spec.method == 'padam':
        return padam(model, x, y, eps, n_iter, loss=spec.loss, **kwargs)
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
            that gave the worst case, ``-1`` for the clean image, ``-2`` for
            the worst case of a smaller radius (``run(previous=...)``).
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


@dataclass(frozen=True)
class SEASettings:
    """SEA's settings as one immutable value: everything but the model, the
    images and the labels, which are arguments of the call (docs/attacks.md,
    "The Python API"). Build it with :meth:`create` (versions, losses and
    defaults resolved, every value checked); :func:`dataclasses.replace`
    and :meth:`with_eps` give changed copies, checked again.

    Attributes:
        attacks (tuple): The :class:`AttackSpec` of each member, in order.
        version (str): ``'SEA-R1'``, ``'SEA-T2'``, ``'SEA-T1'``,
            ``'SEA-2023'``, ``'SEA-2024'`` or ``'custom'``.
        n_iter (int): Iterations each attack runs (SEA-T2: 2.5 x the
            ``n_iter`` asked of :meth:`create`).
        eps (float): Radius.
        ignore_index, seed, class_weights, skip_broken, amp,
        result_precision, random_start, norm, eot: As in :class:`SEA`.
    """
    attacks: Tuple[AttackSpec, ...]
    version: str
    n_iter: int
    eps: float
    ignore_index: int = 255
    seed: SeedLike = 0
    class_weights: Optional[Tensor] = field(default=None, compare=False)
    skip_broken: bool = True
    amp: AmpLike = False
    result_precision: str = 'fp32'
    random_start: bool = True
    norm: str = 'linf'
    eot: int = 1

    def __post_init__(self):
        norm = check_norm(self.norm)
        fixed = dict(
            norm=norm,
            eps=check_radius(self.eps, norm),
            eot=check_eot(self.eot),
            attacks=tuple(parse_attack(a) for a in self.attacks))
        for name, value in fixed.items():
            object.__setattr__(self, name, value)
        if not self.attacks:
            raise ValueError('SEA needs at least one attack')
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f'attack names must be unique, got {names}')
        linf_only = [
            a.name for a in self.attacks if a.method in ('padam', 'square')
        ]
        if norm != 'linf' and linf_only:
            raise ValueError(
                f'{", ".join(linf_only)}: PAdam and the square attack are '
                f'l_inf attacks, but norm={norm!r}; use APGD, red-eps '
                'or PGD attacks for l2')
        min_iter = 3 if any(a.method == 'red_eps' for a in self.attacks) else 1
        object.__setattr__(
            self, 'n_iter',
            check_n_iter(self.n_iter, min_iter,
                         'n_iter (red-eps APGD needs >= 3)'))
        object.__setattr__(self, 'amp', check_amp(self.amp))
        if self.result_precision not in RESULT_PRECISIONS:
            raise ValueError(
                f'result_precision must be one of {RESULT_PRECISIONS}, got '
                f'{self.result_precision!r}')
        if not self.random_start and any(a.restart for a in self.attacks):
            raise ValueError(
                'restarts (NAME#K) need random starts: with '
                'random_start=False they would repeat the first run')

    @classmethod
    def create(cls,
               eps: float,
               n_iter: Optional[int] = None,
               losses: Optional[Sequence[str]] = None,
               attacks: Optional[Sequence[Union[str, AttackSpec]]] = None,
               version: Optional[Union[str, int]] = None,
               **settings) -> 'SEASettings':
        """The settings of a version (default: :data:`DEFAULT_SEA_VERSION`)
        or of the given ``attacks`` / red-eps ``losses``; ``n_iter``
        defaults to the version's and is scaled by its ``iter_factor``
        (SEA-T2: 2.5); ``settings`` are the other fields."""
        check_norm(settings.get('norm', 'linf'))
        if version is not None and (attacks is not None or losses is not None):
            raise ValueError(
                'give either an SEA version or attacks/losses, not both')
        if attacks is None and losses is None:
            preset = sea_version(version)
            attacks, name = preset.attacks, preset.name
            n_iter = preset.iterations(n_iter)
        else:
            if attacks is None:
                attacks = [check_loss_name(loss) for loss in losses]
            name = 'custom'
            if n_iter is None:
                n_iter = SEA_VERSIONS['2023'].n_iter
        return cls(
            attacks=tuple(attacks),
            version=name,
            n_iter=n_iter,
            eps=eps,
            **settings)

    @property
    def names(self) -> List[str]:
        return [a.name for a in self.attacks]

    def describe(self) -> str:
        """One line naming the protocol, e.g. for table titles:
        ``SEA-2023, 300 it./attack: mask_ce (tracks ce), ...``."""
        parts = []
        for a in self.attacks:
            track = f' (tracks {a.track})' if a.track else ''
            method = '' if a.method == 'red_eps' else f'{a.method}:'
            again = f'#{a.restart}' if a.restart else ''
            parts.append(f'{a.name if a.method == "pgd" else method + a.loss}'
                         f'{again}{track}')
        norm = '' if self.norm == 'linf' else f' ({self.norm})'
        return (f'{self.version}{norm}, {self.n_iter} it./attack: ' +
                ', '.join(parts))

    def with_eps(self, eps: float) -> 'SEASettings':
        """The same ensemble at another radius."""
        return replace(self, eps=eps)

    def precision(self, device: Union[str, torch.device]) -> dict:
        """The precisions on ``device``: ``attack`` (the model calls of the
        attacks' iterations) and ``result`` (the predictions that enter the
        reported metrics: clean images and every attack's output)."""
        attack = resolve_amp(self.amp, device)
        result = 'fp32' if self.result_precision == 'fp32' else attack
        return dict(
            attack=amp_name(attack),
            result=result if isinstance(result, str) else amp_name(result))

    def clean(self,
              model,
              x: Tensor,
              y: Tensor,
              check_model: bool = False) -> Prediction:
        """Clean predictions of a batch in the result precision
        (``check_model``: warn if ``model`` is in training mode or not
        deterministic)."""
        return sea_clean(self, model, x, y, check_model)

    def __call__(self, model, x: Tensor, y: Tensor, **kwargs) -> 'SEAResult':
        """Attack a batch: :func:`run_sea` (``kwargs``: ``mask``, ``seed``,
        ``clean``, ``previous``, ``callback``, ``check_model``)."""
        return run_sea(self, model, x, y, **kwargs)

    def curve(self, model, x: Tensor, y: Tensor, radii: Sequence[float],
              **kwargs) -> List['SEAResult']:
        """:func:`sea_curve` at ``radii``."""
        return sea_curve(self, model, x, y, radii, **kwargs)


def check_sea_model(settings: SEASettings, model, x: Tensor, logits: Tensor,
                    dtype: Optional[torch.dtype]) -> None:
    """Warn if ``model`` is in training mode or gives other ``logits`` for
    the same ``x`` (randomised models need EOT, unless ``settings`` use
    it)."""
    warn_if_training(model)
    with torch.no_grad(), autocast_to(x.device, dtype):
        again = model(x).float()
    # with eot > 1 the user already attacks a randomised model as such
    if settings.eot == 1 and not torch.allclose(
            logits, again, rtol=1e-4, atol=1e-5):
        warnings.warn(
            'the model gives different outputs for the same input: '
            'randomised models need attacks with expectation over '
            'transformations; SEA results on them are unreliable.',
            stacklevel=4)


@torch.no_grad()
def sea_clean(settings: SEASettings,
              model,
              x: Tensor,
              y: Tensor,
              check_model: bool = False) -> Prediction:
    """Clean predictions of a batch, in the result precision of
    ``settings`` (see :meth:`SEASettings.clean`)."""
    dtype = None if settings.result_precision == 'fp32' else resolve_amp(
        settings.amp, x.device)
    with autocast_to(x.device, dtype):
        logits = model(x)
    logits = logits.float()
    if check_model:
        check_sea_model(settings, model, x, logits, dtype)
    pred = argmax_classes(logits)
    correct = ((pred == y) & (y != settings.ignore_index)).flatten(1).sum(1)
    return Prediction(pred, correct)


def member_kwargs(settings: SEASettings, spec: AttackSpec, rows: List[int],
                  x: Tensor, mask: Optional[Tensor], clean: Prediction,
                  init: Optional[WorstCase], seed: SeedLike) -> dict:
    """The keyword arguments of member ``spec`` on the images ``rows`` of
    a batch (:func:`run_attack`)."""
    idx = torch.tensor(rows, device=x.device)
    # take_rows: no copies for the whole batch (the usual case for the
    # first attack)
    kwargs = dict(
        ignore_index=settings.ignore_index,
        amp=settings.amp,
        result_precision=settings.result_precision,
        mask=take_rows(mask, idx),
        clean=Prediction(*(take_rows(t, idx) for t in clean)),
        validate=False)
    if spec.method != 'square':
        kwargs.update(eot=settings.eot)
    if spec.method in ('red_eps', 'apgd', 'pgd'):
        kwargs.update(norm=settings.norm)
    if spec.method == 'square':
        kwargs.update(
            class_weights=settings.class_weights,
            seed=_row_seeds(seed, spec.name, x.shape[0], rows),
            start=None if init is None else take_rows(init.x, idx))
    elif spec.method != 'pgd':
        kwargs.update(
            class_weights=settings.class_weights,
            start=sea_start(settings, spec, init, x, seed, idx, mask))
    return kwargs


def run_sea(settings: SEASettings,
            model,
            x: Tensor,
            y: Tensor,
            mask: Optional[Tensor] = None,
            seed: Optional[SeedLike] = None,
            clean: Optional[tuple] = None,
            previous: Optional['SEAResult'] = None,
            callback: Optional[Callable] = None,
            check_model: bool = False) -> 'SEAResult':
    """Attack a batch with the ensemble ``settings`` (:meth:`SEA.run`).

    Args:
        settings (SEASettings): The ensemble.
        model: Callable ``x -> logits`` at label resolution (eval mode).
        x, y, mask, seed, clean, previous: As in :meth:`SEA.run` (``seed``:
            default ``settings.seed``).
        callback (callable, optional): ``callback(name, result,
            worst_correct)`` after each attack.
        check_model (bool): Check the model with the clean prediction
            (when ``clean`` is not given).

    Returns:
        SEAResult: Worst case and per-attack results.
    """
    with Timer(x.device) as timer:
        mask = check_images(x, y, mask)
        x = x.detach().float()
        y = y.to(x.device).long()
        if clean is None:
            clean = sea_clean(settings, model, x, y, check_model)
        clean = Prediction(*(t.to(x.device) for t in clean))
        valid = (y != settings.ignore_index).flatten(1).sum(1)
        worst = WorstCase(x, clean.pred, clean.correct)
        worst_attack = torch.full_like(clean.correct, -1)
        init = None
        if previous is not None:
            init = sea_previous(settings, previous, x)
            better = worst.update(None, init.x, init.pred, init.correct)
            worst_attack = torch.where(better, -2, worst_attack)
        seed = settings.seed if seed is None else seed
        results: Dict[str, AttackResult] = {}
        for k, spec in enumerate(settings.attacks):
            todo = (worst.correct
                    if settings.skip_broken else clean.correct) > 0
            # the one read-back per attack: which images it attacks
            rows = [i for i, t in enumerate(todo.tolist()) if t]
            pred = worst.pred.clone()
            correct = worst.correct.clone()
            res = None
            if rows and settings.eps > 0:
                idx = torch.tensor(rows, device=x.device)
                res = run_attack(
                    spec, subset_model(model, rows), take_rows(x, idx),
                    take_rows(y, idx), settings.eps, settings.n_iter,
                    **member_kwargs(settings, spec, rows, x, mask, clean, init,
                                    seed))
                pred[idx] = res.pred
                correct[idx] = res.correct
                better = worst.update(idx, res.x_adv, res.pred, res.correct)
                worst_attack[idx] = torch.where(better, k, worst_attack[idx])
            elif settings.eps == 0:
                pred, correct = clean.pred.clone(), clean.correct.clone()
            results[spec.name] = AttackResult(
                x_adv=None,
                pred=pred,
                correct=correct,
                valid=valid,
                n_evals=res.n_evals if res is not None else 0,
                time=res.time if res is not None else 0.0,
                extra=dict(ran=todo))
            if callback is not None:
                callback(spec.name, results[spec.name], worst.correct)
    return SEAResult(
        x_adv=worst.x,
        pred=worst.pred,
        correct=worst.correct,
        valid=valid,
        clean_pred=clean.pred,
        clean_correct=clean.correct,
        attacks=results,
        worst_attack=worst_attack,
        eps=settings.eps,
        time=timer.elapsed)


def sea_previous(settings: SEASettings, previous: 'SEAResult',
                 x: Tensor) -> WorstCase:
    """The worst case of a smaller radius as a starting point here."""
    if previous.eps > settings.eps:
        raise ValueError(
            f'previous result at eps={previous.eps:.6g} is larger than '
            f'this radius ({settings.eps:.6g}): radii must increase')
    if previous.x_adv.shape != x.shape:
        raise ValueError('previous result is for another batch: x_adv '
                         f'{tuple(previous.x_adv.shape)} vs x '
                         f'{tuple(x.shape)}')
    return WorstCase(
        previous.x_adv.to(x), previous.pred.to(x.device),
        previous.correct.to(x.device))


def sea_start(settings: SEASettings,
              spec: AttackSpec,
              init: Optional[WorstCase],
              x: Tensor,
              seed: SeedLike,
              idx: Tensor,
              mask: Optional[Tensor] = None) -> StartLike:
    """Where APGD attack ``spec`` starts on images ``idx``.

    Random starts are seeded by the image's seed and the attack's name
    (drawn for the whole batch, so an image's start does not depend on
    which images are still attacked). With a smaller radius's result,
    the images it moved start from their worst case there, in every
    attack (stronger than only the first attack, or none:
    docs/benchmarks.md), except restarts (``NAME#K``), which start at
    their own random start.
    """
    noise = None
    if settings.random_start:
        noise = start_noise(x, derive_seed(seed, spec.name))
    if init is None:
        return None if noise is None else UniformNoise(take_rows(noise, idx))
    # where the attack's first run starts (red-eps: its first radius)
    radius = red_eps_schedule(settings.eps, settings.n_iter)[0][0] if \
        spec.method == 'red_eps' else settings.eps
    fresh = x if noise is None else Ball(x, radius, mask,
                                         settings.norm).random_point(noise)
    if spec.restart:
        # a restart starts afresh, or it would repeat the first start's
        # run from the same point (the smaller radius's worst case is
        # kept in the worst case anyway)
        return take_rows(fresh, idx)
    moved = (init.x != x).flatten(1).any(1).view(-1, 1, 1, 1)
    return take_rows(torch.where(moved, init.x, fresh), idx)


def sea_curve(settings: SEASettings,
              model,
              x: Tensor,
              y: Tensor,
              radii: Sequence[float],
              mask: Optional[Tensor] = None,
              seed: Optional[SeedLike] = None,
              callback: Optional[Callable] = None,
              check_model: bool = False,
              clean: Optional[Prediction] = None) -> List['SEAResult']:
    """Run the ensemble at increasing radii, each radius starting from
    the worst case of the one before (monotone by construction);
    ``clean``: precomputed clean predictions (otherwise computed, with the
    model check where ``check_model``).

    Returns:
        list: One :class:`SEAResult` per radius, in increasing order.
    """
    radii = sorted(check_radius(r, settings.norm) for r in radii)
    if clean is None:
        clean = sea_clean(settings, model,
                          x.detach().float(),
                          y.to(x.device).long(), check_model)
    out: List[SEAResult] = []
    for r in radii:
        out.append(
            run_sea(
                settings.with_eps(r),
                model,
                x,
                y,
                mask=mask,
                seed=seed,
                clean=clean,
                previous=out[-1] if out else None,
                callback=callback))
    return out


class SEA:
    """Segmentation Ensemble Attack on one model: the model, its
    :class:`SEASettings` and the first-run model check (a thin wrapper:
    ``SEA(model, eps, ...).run(x, y)`` is ``run_sea(settings, model, x,
    y)``).

    Runs the attacks one after the other and keeps, per image, the
    adversarial image with the lowest pixel accuracy. Images already at zero
    accuracy are not attacked again (``skip_broken``): the worst case is the
    same as running every attack on every image, for less time. Each attack
    draws its own random start, seeded by the image's seed and the attack's
    name.

    Args:
        model: Callable ``x -> logits`` at label resolution (eval mode).
        eps (float): Radius: l_inf as a fraction, e.g. ``8/255``; l_2 (with
            ``norm='l2'``) the norm of the perturbation of the [0, 1] image,
            e.g. ``0.5``.
        n_iter (int, optional): Iterations per attack (default: the
            version's, 300 as in the paper; fewer weaken every version,
            docs/attacks.md); SEA-T2 runs 2.5 x this (750 by default).
        losses (Sequence[str], optional): Losses of the red-eps APGD runs
            (each with its default tracked objective).
        ignore_index (int): Ignored label.
        seed (int | Sequence[int]): Random-start seed (or one per image).
        attacks (Sequence[str | AttackSpec], optional): Attacks to run
            instead of a version's; names as in :func:`parse_attack` (e.g.
            ``'segpgd'``, ``'apgd:ce'``, ``'mask_ce@mask_ce'``).
        version (str, optional): ``'recommended'`` (SEA-R1, the
            default), ``'thorough'`` (SEA-T2: SEA-R1's attacks at 2.5 x
            the iterations), ``'T1'``, ``'2023'`` (the paper) or ``'2024'``;
            see :data:`SEA_VERSIONS`. Not with ``attacks`` / ``losses``.
        class_weights (Tensor, optional): ``(K,)`` class weights of
            ``mask_ce_bal`` (SEA-2024: inverse training-label frequencies,
            see :func:`~.losses.class_weights_from_counts`); ``None`` weighs
            each image's classes by their frequency in that image.
        skip_broken (bool): Do not attack images already at zero accuracy.
        amp (AmpLike): Precision of the attacks' model calls: ``'fp16'``,
            ``'bf16'``, ``True`` (bf16 where the device supports it, else
            fp16) or ``False`` (float32); see docs/attacks.md, "Precision".
        random_start (bool): Random start of the APGD attacks (PGD
            baselines start at ``x`` as in their papers).
        check_model (bool): On the first run, warn if the model is in
            training mode or its outputs are not deterministic.
        callback (callable, optional): Called as ``callback(name, result,
            worst_correct)`` after each attack, e.g. to log progress.
        result_precision (str): ``'fp32'`` (default): clean predictions and
            each attack's output are evaluated in float32 whatever ``amp``
            says, so reported numbers do not depend on the attack's
            precision; ``'amp'``: in ``amp``.
        norm (str): Threat model: ``'linf'`` (default, the paper's) or
            ``'l2'`` (every APGD and PGD member in its l_2 version; PAdam
            and the square attack are l_inf only and refused).
        eot (int): Expectation over transformation for randomised models:
            gradients of the white-box attacks are averaged over ``eot``
            forward+backward passes (``eot`` times the cost); the square
            attack queries once per point.
    """

    def __init__(self,
                 model,
                 eps: float,
                 n_iter: Optional[int] = None,
                 losses: Optional[Sequence[str]] = None,
                 ignore_index: int = 255,
                 seed: SeedLike = 0,
                 attacks: Optional[Sequence[Union[str, AttackSpec]]] = None,
                 version: Optional[Union[str, int]] = None,
                 class_weights: Optional[Tensor] = None,
                 skip_broken: bool = True,
                 amp: AmpLike = False,
                 random_start: bool = True,
                 check_model: bool = True,
                 callback: Optional[Callable] = None,
                 result_precision: str = 'fp32',
                 norm: str = 'linf',
                 eot: int = 1):
        self.model = model
        self.settings = SEASettings.create(
            eps,
            n_iter,
            losses,
            attacks,
            version,
            ignore_index=ignore_index,
            seed=seed,
            class_weights=class_weights,
            skip_broken=skip_broken,
            amp=amp,
            random_start=random_start,
            result_precision=result_precision,
            norm=norm,
            eot=eot)
        self.check_model = check_model
        self.callback = callback
        self._checked = False

    #: what reads through to the settings (``sea.eps``, ``sea.describe()``)
    _READ_THROUGH = frozenset(
        SEASettings.__dataclass_fields__) | {'names', 'describe', 'precision'}

    def __getattr__(self, name: str):
        if name in SEA._READ_THROUGH:
            return getattr(self.settings, name)
        raise AttributeError(
            f'{type(self).__name__!r} object has no attribute {name!r}')

    def __setattr__(self, name: str, value) -> None:
        # settings are values: assigning one replaces the settings
        if name in SEA._READ_THROUGH and \
                name not in SEASettings.__dataclass_fields__:
            raise AttributeError(f'{name!r} of an SEA is read-only')
        if name in SEASettings.__dataclass_fields__:
            value = replace(self.settings, **{name: value})
            name = 'settings'
        object.__setattr__(self, name, value)

    def with_eps(self, eps: float) -> 'SEA':
        """The same ensemble at another radius (shares the model check)."""
        other = SEA.__new__(SEA)
        other.__dict__.update(self.__dict__)
        other.settings = self.settings.with_eps(eps)
        return other

    def clean(self, x: Tensor, y: Tensor) -> Prediction:
        """Clean predictions of a batch, in the result precision (checks
        the model on the first call that gets that far)."""
        check = self.check_model and not self._checked
        pred = sea_clean(self.settings, self.model, x, y, check)
        self._checked = self._checked or check
        return pred

    def run(self,
            x: Tensor,
            y: Tensor,
            mask: Optional[Tensor] = None,
            seed: Optional[SeedLike] = None,
            clean: Optional[tuple] = None,
            previous: Optional['SEAResult'] = None) -> 'SEAResult':
        """Attack a batch.

        Args:
            x (Tensor): ``(B, 3, H, W)`` clean images in [0, 1].
            y (Tensor): ``(B, H', W')`` labels.
            mask (Tensor, optional): Pixels that may be perturbed.
            seed (int | Sequence[int], optional): Overrides the seed given at
                construction (e.g. one seed per dataset index).
            clean (Prediction, optional): Precomputed clean predictions,
                e.g. when the same batch is attacked at several radii.
            previous (SEAResult, optional): The result of this batch at a
                smaller radius (monotone radii, docs/attacks.md). Its
                adversarial images are feasible here, so each image starts
                from its worst case there and is never reported weaker;
                images it already broke completely are not attacked again.

        Returns:
            SEAResult: Worst case and per-attack results.
        """
        if clean is None:
            # bad input fails before the model runs (and is checked)
            check_images(x, y, mask)
            clean = self.clean(x.detach().float(), y.to(x.device).long())
        return run_sea(
            self.settings,
            self.model,
            x,
            y,
            mask=mask,
            seed=seed,
            clean=clean,
            previous=previous,
            callback=self.callback)

    def curve(self,
              x: Tensor,
              y: Tensor,
              radii: Sequence[float],
              mask: Optional[Tensor] = None,
              seed: Optional[SeedLike] = None) -> List['SEAResult']:
        """Run the ensemble at increasing radii, each radius starting from
        the worst case of the one before (monotone by construction).

        Returns:
            list: One :class:`SEAResult` per radius, in increasing order.
        """
        radii = [check_radius(r, self.settings.norm) for r in radii]
        return sea_curve(
            self.settings,
            self.model,
            x,
            y,
            radii,
            mask=mask,
            seed=seed,
            callback=self.callback,
            clean=self.clean(x.detach().float(),
                             y.to(x.device).long()))


def _row_seeds(seed: SeedLike, name: str, n: int, rows: List[int]):
    """Per-image seeds of attack ``name`` for the images ``rows`` of a
    batch of ``n``: an image's run depends on its seed and the attack only,
    not on which images are still attacked."""
    seeds = derive_seed(seed, name)
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(n)]
    return [seeds[i] for i in rows]
