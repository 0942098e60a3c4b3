"""Adversarial training as an MMEngine hook (the paper's Section 4,
docs/training.md)."""
import math
from typing import Optional

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from mmseg_robust.adapter import AttackBatch, unwrap_segmentor
from mmseg_robust.attacks import (check_norm, check_radius, derive_seed,
                                  pgd_train)
from mmseg_robust.attacks.losses import check_loss_name
from mmseg_robust.errors import ConfigError

DATA_BATCH = Optional[dict]

__all__ = ['AdvTrainingHook']


def _is_int(value) -> bool:
    """An integer (``2``, ``2.0``), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == int(value)


@HOOKS.register_module()
class AdvTrainingHook(Hook):
    """Replace each training batch by PGD adversarial images (AT^k).

    Before every training iteration the hook attacks the batch with ``steps``
    steps of PGD (l_inf, or l_2 with ``norm='l2'``) and swaps the images in
    ``data_batch['inputs']``, so the stock ``train_step`` (decode and
    auxiliary heads, optimizer, AMP) trains on them. The attack:

    * perturbs the raw images in [0, 1] units in front of the data
      preprocessor (channel order, mean/std and padding are applied inside
      the differentiable forward; padding is never perturbed);
    * runs with the segmentor in eval mode, so BatchNorm statistics are not
      updated by attack forwards, and restores the previous mode;
    * computes gradients with respect to the input only;
    * runs under ``optim_wrapper.optim_context`` so AMP configs attack in
      mixed precision too, with the input gradient scaled so that it does
      not underflow in float16 (docs/attacks.md, "Precision");
    * stays on the model's device: the adversarial images replace the
      batch's where the attack made them, and the data preprocessor takes
      them from there (no copy back to the host);
    * draws its random start (``random_start=True``) from a seed that
      differs per iteration and per process, so the ranks of a distributed
      run do not share their noise;
    * unwraps DDP and other model wrappers.

    Logged to the message hub (and so to MMSeg's training log and
    TensorBoard): ``adv_loss`` (the attack objective at its last step) and
    ``adv_steps``. The accuracy of the model on the adversarial batch is the
    ``decode.acc_seg`` MMSeg already logs, since it trains on that batch.

    Args:
        eps (float): l_inf radius as a fraction (default ``4/255``); with
            ``norm='l2'`` the l_2 norm of the perturbation of the [0, 1]
            image (docs/attacks.md, "The l2 threat model").
        steps (int): PGD steps ``k`` (2 or 5 in the paper).
        step_size (float, optional): Defaults to ``2.5 * eps / steps``.
        random_start (bool): Random start in the eps-ball (default off).
        loss (str): Attack loss (any of :data:`PIXEL_LOSSES`, default
            ``'ce'``).
        adv_ratio (float): Fraction of each batch made adversarial (the
            first ``round(adv_ratio * B)`` images; batches are shuffled).
        start_iter (int): Train clean before this iteration (warm-up).
        seed (int): Seed of the random start (combined with the iteration
            and the process rank, :meth:`start_seed`).
        norm (str): ``'linf'`` (default, the paper's) or ``'l2'`` (steps
            along the l_2-normalised gradient, projection onto the l_2
            ball).
    """

    priority = 'LOW'  # after hooks that may still change the batch

    def __init__(self,
                 eps: float = 4 / 255,
                 steps: int = 2,
                 step_size: Optional[float] = None,
                 random_start: bool = False,
                 loss: str = 'ce',
                 adv_ratio: float = 1.0,
                 start_iter: int = 0,
                 seed: int = 0,
                 norm: str = 'linf'):
        try:
            self.norm = check_norm(norm)
            self.eps = check_radius(eps, norm)
            self.loss = check_loss_name(loss)
            if step_size is not None:
                step_size = check_radius(step_size, norm, 'step_size')
        except (TypeError, ValueError) as err:
            raise ConfigError(f'AdvTrainingHook: {err}') from err
        if not _is_int(steps) or steps < 1:
            raise ConfigError('AdvTrainingHook: steps must be an integer '
                              f'>= 1 (2 or 5 in the paper), got {steps!r}')
        self.steps = int(steps)
        self.step_size = (2.5 * self.eps /
                          self.steps if step_size is None else step_size)
        self.random_start = bool(random_start)
        if not isinstance(adv_ratio, (int, float)) or \
                not 0.0 <= float(adv_ratio) <= 1.0:
            raise ConfigError('AdvTrainingHook: adv_ratio must be in [0, 1] '
                              f'(the adversarial fraction of each batch), '
                              f'got {adv_ratio!r}')
        self.adv_ratio = float(adv_ratio)
        if not _is_int(start_iter) or start_iter < 0:
            raise ConfigError('AdvTrainingHook: start_iter must be an '
                              f'integer >= 0, got {start_iter!r}')
        self.start_iter = int(start_iter)
        self.seed = int(seed)

    def before_train(self, runner) -> None:
        if self.norm == 'linf':
            radius = (f'eps={self.eps * 255:g}/255, step size '
                      f'{self.step_size * 255:g}/255')
        else:
            radius = (f'l2 eps={self.eps:g}, step size {self.step_size:g}')
        print_log(
            f'AdvTrainingHook: PGD AT^{self.steps}, {radius}, loss '
            f'{self.loss!r}, '
            f'random start {self.random_start}, {self.adv_ratio:.0%} of each '
            f'batch adversarial from iteration {self.start_iter}',
            logger='current')

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        if data_batch is None or runner.iter < self.start_iter or \
                self.adv_ratio == 0 or self.eps == 0:
            return
        inputs = data_batch['inputs']
        n_adv = int(math.floor(self.adv_ratio * len(inputs) + 0.5))
        if n_adv == 0:
            return
        segmentor = unwrap_segmentor(runner.model)
        sub = dict(
            inputs=list(inputs[:n_adv]),
            data_samples=data_batch['data_samples'][:n_adv])
        x_adv, losses = self.attack(runner, segmentor, sub)
        adv_inputs = list(inputs)
        adv_inputs[:n_adv] = x_adv
        data_batch['inputs'] = adv_inputs
        runner.message_hub.update_scalar('train/adv_loss', losses[-1])

    def start_seed(self, iteration: int, rank: int) -> int:
        """Seed of the random start at ``iteration`` on process ``rank``."""
        return derive_seed(self.seed, f'{iteration}:{rank}')

    def attack(self, runner, segmentor, data: dict):
        """Adversarial versions of ``data['inputs']`` (float, [0, 255], on
        the model's device)."""
        batch = AttackBatch.from_data(segmentor, data, mode='train')
        was_training = segmentor.training
        segmentor.eval()
        try:
            with runner.optim_wrapper.optim_context(segmentor):
                x_adv, losses = pgd_train(
                    batch.model,
                    batch.x,
                    batch.y,
                    self.eps,
                    self.steps,
                    step_size=self.step_size,
                    loss=self.loss,
                    start=self.start_seed(runner.iter, get_rank())
                    if self.random_start else None,
                    ignore_index=batch.ignore_index,
                    mask=batch.mask,
                    norm=self.norm)
        finally:
            segmentor.train(was_training)
        # back to the layout the data preprocessor expects; they stay on the
        # model's device, where the preprocessor moves the batch anyway
        return batch.raw_images(x_adv.detach()), losses
