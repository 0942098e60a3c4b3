"""SEATestLoop: robustness evaluation of an MMSeg model with SEA.

The loop loops: per batch the clean prediction and SEA at every radius,
one record per image (:mod:`.sea_batch`). Each image and attack gets its
own random-start seed derived from ``seed``, the image's dataset index and
the attack's name, so results do not depend on batch composition, on the
number of processes, or on resuming.

Per-image results are appended to ``<results_dir>/rank<r>.jsonl`` as each
batch finishes (:mod:`.sea_book`, on
:mod:`mmseg_robust.evaluation.result_store`); with ``resume=True`` images
already there are skipped and the metrics equal an uninterrupted run. At
the end the loop writes ``summary.json`` (metrics, settings, versions,
timing) and ``robustness_curve.png`` to ``results_dir``
(:mod:`.sea_report`); the records flow to :class:`SEAMetric`, whose
metrics make the tables. Options and the settings results record are in
:mod:`.sea_options`, the trust report's part in :mod:`.sea_trust`.

Bad settings and data (a test set that is empty, a dataset wrapper,
test-time augmentation, images without labels or with labels outside the
classes, results of other settings on resume) raise
:class:`~mmseg_robust.errors.ConfigError` before anything of theirs is
recorded (:mod:`.sea_checks`); ``tools/test.py`` prints it as one
``error:`` line (docs/errors.md). In a distributed run an exception on one
rank stops every rank after the same batch (or set-up step), each with the
error (:mod:`~mmseg_robust.evaluation.dist_guard`): no rank is left
waiting.
"""
import os.path as osp
from typing import List, Optional, Sequence, Union

import torch
from mmengine.dist import get_dist_info
from mmengine.runner import TestLoop
from mmseg.registry import LOOPS

from mmseg_robust.attacks.trust import trust_checks
from mmseg_robust.evaluation.dist_guard import fail_together, run_on_main
from mmseg_robust.evaluation.result_store import file_sha256
from .sea_batch import SEABatchAttack
from .sea_book import SEARecordBook
from .sea_checks import (TTA_PROBLEM, check_dataset, check_labels,
                         check_max_images, dataset_errors, dataset_problem,
                         expose_sample_idx, find_sea_metric,
                         resolve_ignore_index, sea_dataloader)
from .sea_options import SEAOptions
from .sea_report import write_run_summary
from .sea_trust import check_trust_options

__all__ = ['SEATestLoop', 'DEFAULT_EPS', 'dataset_problem', 'TTA_PROBLEM']

#: Default radii (4, 8, 12, 16 / 255).
DEFAULT_EPS = (4 / 255, 8 / 255, 12 / 255, 16 / 255)


@LOOPS.register_module()
class SEATestLoop(TestLoop):
    """Test loop that evaluates clean and adversarial robustness with SEA.

    For each batch it predicts the clean images and runs, for every radius
    in increasing order, SEA (or the chosen attacks) through
    :class:`SegmentorAttackModel` with gradients enabled (module docstring:
    seeds, records, resuming, errors). With ``chain_radii`` each radius
    starts from the worst case of the smaller one (docs/evaluation.md):
    robustness curves are monotone by construction and images broken at a
    small radius are not attacked again. Hooks get as ``after_test_iter``'s
    ``outputs`` the ``SegDataSample``s of the batch's images attacked in
    this run, in batch order (not a resumed run's earlier images: records
    hold no predictions), with ``pred_sem_seg`` the worst case over the
    ensemble at the largest radius and ``clean_pred_sem_seg`` the clean
    prediction (:func:`~.sea_batch.attach_predictions`).

    Args:
        runner: The runner.
        dataloader (DataLoader | dict): The test dataloader.
        evaluator (Evaluator | dict | list): Must contain a
            :class:`SEAMetric`.
        eps, n_iter, attacks, version, class_weights, seed, amp,
            result_precision, channels_last, compile, skip_broken,
            chain_radii, norm, eot: The attacks, their radii (default
            :data:`DEFAULT_EPS`) and precision: see
            :class:`~.sea_options.SEAOptions`.
        max_images (int, optional): Only the first ``max_images`` images of
            the dataset (quick look).
        results_dir (str, optional): Where records and outputs go (default
            ``<work_dir>/sea``).
        resume (bool): Continue from the records in ``results_dir``.
        show_dir (str, optional): Save clean and worst-case adversarial
            predictions drawn with MMSeg's visualizer.
        log_interval (int): Log progress every this many batches.
        ignore_index (int, optional): Label of ignored pixels in attacks,
            label checks and metrics; default the :class:`SEAMetric`'s
            ``ignore_index`` where its config sets one, else the decode
            head's (MMSeg's is 255). Given here and in the metric, the two
            must agree (else :class:`~mmseg_robust.errors.ConfigError`).
        checks (str), surrogate (dict | nn.Module, optional): The trust
            report (default ``'fast'``) and its transfer check's surrogate:
            see :func:`~.sea_trust.check_trust_options`.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[dict, object],
                 evaluator: Union[dict, list, object],
                 eps: Sequence[float] = DEFAULT_EPS,
                 n_iter: Optional[int] = None,
                 attacks: Optional[Sequence[str]] = None,
                 version: Optional[Union[str, int]] = None,
                 class_weights: Union[str, Sequence[float]] = 'train',
                 seed: int = 0,
                 amp: Union[bool, str] = False,
                 skip_broken: bool = True,
                 chain_radii: bool = True,
                 max_images: Optional[int] = None,
                 results_dir: Optional[str] = None,
                 resume: bool = False,
                 show_dir: Optional[str] = None,
                 log_interval: int = 1,
                 ignore_index: Optional[int] = None,
                 result_precision: str = 'fp32',
                 channels_last: bool = False,
                 compile: Union[bool, dict] = False,
                 checks: str = 'fast',
                 surrogate: Union[None, dict, torch.nn.Module] = None,
                 norm: str = 'linf',
                 eot: int = 1) -> None:
        o = self.options = SEAOptions(eps, norm, n_iter, attacks, version,
                                      class_weights, seed, amp, skip_broken,
                                      chain_radii, result_precision,
                                      channels_last, compile, eot)
        self.sea, self.eps, self.norm = o.sea, o.eps, o.norm
        check_trust_options(checks, surrogate)
        self.checks, self.surrogate_spec = checks, surrogate
        self.max_images = check_max_images(max_images)
        self.resume = bool(resume)
        self.log_interval = max(int(log_interval), 1)
        dataloader = sea_dataloader(dataloader, self.max_images)
        with dataset_errors():
            super().__init__(runner, dataloader, evaluator)
        check_dataset(self.dataloader.dataset)
        self.classes = list(self.dataloader.dataset.metainfo['classes'])
        self.metric = find_sea_metric(self.evaluator)
        self.ignore_index = resolve_ignore_index(ignore_index,
                                                 self.metric.ignore_index,
                                                 runner.model)
        self.results_dir = results_dir or osp.join(runner.work_dir, 'sea')
        expose_sample_idx(self.dataloader.dataset)
        self.batches = SEABatchAttack(self.options, self.ignore_index,
                                      len(self.classes), checks, show_dir)
        self.book = SEARecordBook(self.results_dir, self.evaluator,
                                  self.sea.describe(), self.norm,
                                  self.options.eps_keys)

    @property
    def attack_names(self) -> List[str]:
        return self.sea.names

    @property
    def n_iter(self) -> int:
        return self.sea.n_iter

    @property
    def eps_keys(self) -> List[str]:
        """The radii as results key them (:func:`eps_key`)."""
        return self.options.eps_keys

    def settings(self) -> dict:
        """Everything that changes the numbers (checked on resume, with
        the checkpoint identified by its content, not its path)."""
        if not hasattr(self, '_ckpt_digest'):
            self._ckpt_digest = file_sha256(self.runner.cfg.get('load_from'))
        return self.options.settings(self._ckpt_digest, self._device())

    def precision(self) -> dict:
        """The precisions on the model's device (``attack``, ``result``;
        see :meth:`SEA.precision`)."""
        return self.options.precision(self._device())

    def _device(self) -> str:
        return str(next(self.runner.model.parameters()).device)

    def image_seed(self, idx: int) -> int:
        """Random-start seed of dataset image ``idx``."""
        return self.batches.image_seed(idx)

    def run(self) -> dict:
        """Evaluate the whole test set."""
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        world_size = get_dist_info()[1]
        # every step below either succeeds on every rank or raises on
        # every rank (mmseg_robust.evaluation.dist_guard), so no rank
        # waits for one that has failed
        self.batches.prepare(self.runner.model, self.runner.cfg,
                             self.results_dir, self.resume,
                             self.surrogate_spec, self._device())
        self.book.open(self.settings, self.resume,
                       len(self.dataloader.dataset), len(self.dataloader))
        self.options.log_settings(
            len(self.dataloader.dataset), world_size, self._device(),
            self.results_dir)
        try:
            # as many batches on every rank (the sampler pads); run_iter
            # runs for each, also where resuming leaves nothing to do
            batches = iter(self.dataloader)
            for idx in range(len(self.dataloader)):
                with fail_together(f'batch {idx}'):
                    self.run_iter(idx, next(batches))
        finally:
            self.book.close()
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        run_on_main(write_run_summary, self.results_dir, metrics, self.metric,
                    self.options, self.settings(),
                    self.runner.cfg, self.runner.experiment_name,
                    len(self.dataloader.dataset), world_size, self.book,
                    self._device())
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    def run_iter(self, idx: int, data_batch: dict) -> None:
        """Attack one batch (with gradients, unlike ``TestLoop.run_iter``);
        hooks get the attacked images' data samples with their predictions
        as ``outputs`` (class docstring)."""
        self.runner.call_hook(
            'before_test_iter', batch_idx=idx, data_batch=data_batch)
        samples = data_batch['data_samples']
        keys = [int(s.metainfo['sample_idx']) for s in samples]
        todo = [i for i, k in enumerate(keys) if k not in self.book.done]
        if todo:
            check_labels([samples[i] for i in todo], len(self.classes),
                         self.ignore_index)
            sub = dict(
                inputs=[data_batch['inputs'][i] for i in todo],
                data_samples=[samples[i] for i in todo])
            self.batches.check_model_classes(self.runner.model, sub,
                                             self.classes)
            self.book.add(
                self.attack_batch(sub, [keys[i] for i in todo]), data_batch)
        if (idx + 1) % self.log_interval == 0 or \
                idx + 1 == len(self.dataloader):
            self.book.progress.log(idx)
        self.runner.call_hook(
            'after_test_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=[samples[i] for i in todo])

    def attack_batch(self, data: dict, keys: List[int]) -> List[dict]:
        """One batch's records (:meth:`SEABatchAttack.attack`, with this
        module's ``trust_checks``); its data samples get the predictions."""
        return self.batches.attack(self.runner.model, data, keys,
                                   self.dataloader.dataset.metainfo,
                                   trust_checks)
