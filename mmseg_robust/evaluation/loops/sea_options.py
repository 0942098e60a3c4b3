"""The attack options of :class:`SEATestLoop`, checked once, and what the
results record of them: the settings checked on resume, the precision,
and the settings line of the log."""
from collections import OrderedDict
from typing import List, Optional, Sequence, Union

from mmengine.logging import print_log

from mmseg_robust.attacks import SEASettings, check_norm, check_radius
from mmseg_robust.attacks.accelerate import check_compile
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation.class_weights import load_class_weights
from mmseg_robust.evaluation.dist_guard import run_on_main
from mmseg_robust.evaluation.records import eps_key, radius_label

__all__ = ['SEAOptions']


class SEAOptions:
    """The ensemble :class:`SEATestLoop` runs and the options around it
    (the loop's arguments of the same names).

    Args:
        eps (Sequence[float]): Radii: l_inf as fractions (``4/255``...);
            with ``norm='l2'`` l_2 norms of the perturbation of the [0, 1]
            image (``0.5``...).
        n_iter (int, optional): Iterations per attack (default: the
            version's, 300 as in the paper; SEA-T2 runs 2.5 x this).
        attacks (Sequence[str], optional): Attack names (see
            :func:`~mmseg_robust.attacks.parse_attack`) instead of an SEA
            version.
        version (str, optional): SEA version: ``'recommended'`` (SEA-R1,
            the default), ``'thorough'`` (SEA-T2), ``'T1'`` (the first
            thorough preset), ``'2023'`` (the paper) or ``'2024'`` (see
            :data:`~mmseg_robust.attacks.SEA_VERSIONS`).
        class_weights (str | Sequence[float]): Class weights of the
            ``mask_ce_bal`` attack (SEA-2024): ``'train'`` (inverse
            frequencies of the training labels, counted once and stored in
            ``results_dir``), ``'test'`` (of the evaluated images' labels
            after the test pipeline, as the authors did for PASCAL-VOC),
            ``'image'`` (each image's own) or one number per class.
        seed (int): Base seed of the random starts.
        amp (bool | str): Precision of the attacks' model calls: ``False``
            (float32), ``'fp16'``, ``'bf16'`` or ``True`` (bf16 where the
            device supports it, else fp16); docs/attacks.md, "Precision".
        result_precision (str): ``'fp32'`` (default): clean predictions and
            every attack's output are evaluated in float32 whatever ``amp``
            says; ``'amp'``: in ``amp`` (``summary.json`` records both).
        channels_last (bool): Run the segmentor with channels-last weights
            and inputs.
        compile (bool | dict): ``torch.compile`` the segmentor's backbone,
            neck and heads (a dict: ``torch.compile`` arguments).
        skip_broken (bool): Do not attack images already at zero accuracy.
        chain_radii (bool): Each radius starts from (and never reports
            weaker than) the worst case at the smaller radius.
        norm (str): Threat model: ``'linf'`` (default) or ``'l2'``
            (docs/attacks.md, "The l2 threat model").
        eot (int): Expectation over transformation for randomised models:
            the white-box attacks average each gradient over ``eot``
            passes.

    Raises:
        ConfigError: A radius, norm, version, attack, iteration count,
            precision or compile option is invalid.
    """

    def __init__(self,
                 eps: Union[float, Sequence[float]],
                 norm: str = 'linf',
                 n_iter: Optional[int] = None,
                 attacks: Optional[Sequence[str]] = None,
                 version: Optional[Union[str, int]] = None,
                 class_weights: Union[str, Sequence[float]] = 'train',
                 seed: int = 0,
                 amp: Union[bool, str] = False,
                 skip_broken: bool = True,
                 chain_radii: bool = True,
                 result_precision: str = 'fp32',
                 channels_last: bool = False,
                 compile: Union[bool, dict] = False,
                 eot: int = 1) -> None:
        if isinstance(eps, (int, float)):
            eps = [eps]
        try:
            self.norm = check_norm(norm)
            self.eps = sorted({check_radius(e, norm) for e in eps})
        except (TypeError, ValueError) as err:
            raise ConfigError(f'SEATestLoop: {err}') from err
        if not self.eps:
            raise ConfigError('SEATestLoop needs at least one radius (eps)')
        # the ensemble's settings, one value (validates version, attacks and
        # n_iter once); the model and the batch are arguments of its calls
        try:
            self.sea = SEASettings.create(
                self.eps[0],
                n_iter=n_iter,
                attacks=list(attacks) if attacks else None,
                version=version,
                seed=int(seed),
                skip_broken=bool(skip_broken),
                amp=amp,
                result_precision=result_precision,
                norm=self.norm,
                eot=eot)
            self.compile = check_compile(compile)
        except (TypeError, ValueError) as err:
            raise ConfigError(f'SEATestLoop: {err}') from err
        self.channels_last = bool(channels_last)
        self.chain_radii = bool(chain_radii)
        self.uses_class_weights = any(a.loss == 'mask_ce_bal'
                                      for a in self.sea.attacks)
        self.class_weights_spec = class_weights if \
            self.uses_class_weights else None
        #: SEA-2024's class weights once resolved (``None``: per image)
        self.class_weights: Optional[List[float]] = None

    def resolve_class_weights(self, cfg, num_classes: int, ignore_index: int,
                              path: str, resume: bool) -> None:
        """SEA-2024's class weights, resolved once on rank 0 and shared
        (or its error raised on every rank); ``path``: where ``'train'``
        weights are stored."""
        if self.uses_class_weights:
            self.class_weights = run_on_main(load_class_weights,
                                             self.class_weights_spec, cfg,
                                             num_classes, ignore_index, path,
                                             resume)

    @property
    def eps_keys(self) -> List[str]:
        """The radii as results key them (:func:`eps_key`)."""
        return [eps_key(e, self.norm) for e in self.eps]

    def precision(self, device: str) -> dict:
        """The precisions on ``device`` (``attack``, ``result``; see
        :meth:`SEA.precision`)."""
        return self.sea.precision(device)

    def precision_settings(self, device: str) -> dict:
        """``amp`` as results record it: ``False`` for float32 (as earlier
        releases wrote it, so their results resume), else the attack
        precision and the precision of the reported predictions."""
        prec = self.precision(device)
        if prec['attack'] == 'fp32':
            return dict(amp=False)
        return dict(amp=prec['attack'], result_precision=prec['result'])

    def class_weights_setting(self):
        """The class weights as results record them."""
        if not self.uses_class_weights:
            return None
        if self.class_weights is None:
            return 'image'
        return dict(
            source=self.class_weights_spec if isinstance(
                self.class_weights_spec, str) else 'given',
            weights=[round(w, 6) for w in self.class_weights])

    def settings(self, checkpoint_sha256: Optional[str],
                 device: str) -> OrderedDict:
        """Everything that changes the numbers (checked on resume)."""
        sea = self.sea
        return OrderedDict(
            eps=self.eps_keys,
            version=sea.version,
            n_iter=sea.n_iter,
            attacks=sea.names,
            tracked={a.name: a.track
                     for a in sea.attacks},
            class_weights=self.class_weights_setting(),
            seed=sea.seed,
            **self.precision_settings(device),
            skip_broken=sea.skip_broken,
            chain_radii=self.chain_radii,
            checkpoint_sha256=checkpoint_sha256,
            # only where not the default, so that earlier results resume
            **({} if self.norm == 'linf' else dict(norm=self.norm)),
            **({} if sea.eot == 1 else dict(eot=sea.eot)))

    def precision_text(self, device: str) -> str:
        """The precision as the settings line names it."""
        prec = self.precision(device)
        if prec['attack'] == 'fp32':
            text = 'fp32'
        else:
            text = (f'attacks in {prec["attack"]}, reported predictions in '
                    f'{prec["result"]}')
        extras = [
            name for name, on in (('channels_last', self.channels_last),
                                  ('torch.compile', self.compile is not False))
            if on
        ]
        return text + ''.join(f', {e}' for e in extras)

    def log_settings(self, n_images: int, world_size: int, device: str,
                     results_dir: str) -> None:
        """Log the line the loop starts with."""
        print_log((f'SEA evaluation of {n_images} image(s) on {world_size} '
                   f'process(es): radii '
                   f'{[radius_label(k, self.norm) for k in self.eps_keys]} '
                   f'({"chained" if self.chain_radii else "independent"}), '
                   f'{self.sea.describe()}; seed {self.sea.seed}, precision '
                   f'{self.precision_text(device)}; per-image results in '
                   f'{results_dir}'),
                  logger='current')
