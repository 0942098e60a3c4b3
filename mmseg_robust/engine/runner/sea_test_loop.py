"""SEATestLoop: robustness evaluation of an MMSeg model with SEA.

The loop loops: per batch the clean prediction and SEA at every radius,
one record per image. Records on disk and resuming live in
:mod:`mmseg_robust.evaluation.result_store`, data checks in
:mod:`.sea_checks`, progress and ``summary.json`` in :mod:`.sea_report`;
the records flow to :class:`SEAMetric`, whose metrics make the tables.
"""
import copy
import logging
import os
import os.path as osp
import time
import warnings
import zlib
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner import TestLoop
from mmseg.registry import LOOPS

from mmseg_robust.attacks import SEA, check_norm, check_radius
from mmseg_robust.attacks.accelerate import check_compile
from mmseg_robust.attacks.trust import (TRUST_BUDGETS, TRUST_LEVELS,
                                        trust_checks)
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation.class_weights import load_class_weights
from mmseg_robust.evaluation.dist_guard import fail_together, run_on_main
from mmseg_robust.evaluation.metrics import SEAMetric, sea_tables
from mmseg_robust.evaluation.object_sizes import size_buckets
from mmseg_robust.evaluation.records import (RADIUS_AXIS, eps_key, image_areas,
                                             radius_label)
from mmseg_robust.evaluation.result_store import ResultStore, file_sha256
from mmseg_robust.models import (AttackBatch, accelerate_segmentor,
                                 final_decode_head, unwrap_segmentor)
from .sea_checks import (TTA_PROBLEM, check_labels, check_num_classes,
                         check_pipeline, dataset_problem)
from .sea_report import SEAProgress, write_summary

__all__ = ['SEATestLoop', 'DEFAULT_EPS', 'dataset_problem', 'TTA_PROBLEM']

#: Default radii (4, 8, 12, 16 / 255).
DEFAULT_EPS = (4 / 255, 8 / 255, 12 / 255, 16 / 255)


@LOOPS.register_module()
class SEATestLoop(TestLoop):
    """Test loop that evaluates clean and adversarial robustness with SEA.

    For each batch it predicts the clean images and runs, for every radius
    in increasing order, SEA (or the chosen attacks) through
    :class:`SegmentorAttackModel` with gradients enabled. With
    ``chain_radii`` each radius starts from the worst case of the smaller
    one (docs/evaluation.md): robustness curves are monotone by construction
    and
    images broken at a small radius are not attacked again. Each image and
    attack gets its own random-start seed derived from ``seed``, the
    image's dataset index and the attack's name, so results do not depend on
    batch composition, on the number of processes, or on resuming.

    Per-image results are appended to ``<results_dir>/rank<r>.jsonl`` as each
    batch finishes; with ``resume=True`` images already there are skipped
    and the metrics equal an uninterrupted run. At the end the loop writes
    ``summary.json`` (metrics, settings, versions, timing) and
    ``robustness_curve.png`` to ``results_dir``.

    Bad settings and data (a test set that is empty, a dataset wrapper,
    test-time augmentation, images without labels or with labels outside
    the classes, results of other settings on resume) raise
    :class:`~mmseg_robust.errors.ConfigError` before anything of theirs is
    recorded; ``tools/test.py`` prints it as one ``error:`` line
    (docs/errors.md). In a distributed run an exception on one rank stops
    every rank after the same batch (or set-up step), each with the error
    (:mod:`~mmseg_robust.evaluation.dist_guard`): no rank is left waiting.

    Args:
        runner: The runner.
        dataloader (DataLoader | dict): The test dataloader.
        evaluator (Evaluator | dict | list): Must contain a
            :class:`SEAMetric`.
        eps (Sequence[float]): Radii: l_inf as fractions (``4/255``...);
            with ``norm='l2'`` l_2 norms of the perturbation of the [0, 1]
            image (``0.5``...).
        n_iter (int, optional): Iterations per attack (default: the
            version's, 300 as in the paper).
        attacks (Sequence[str], optional): Attack names (see
            :func:`~mmseg_robust.attacks.parse_attack`) instead of an SEA
            version.
        version (str, optional): SEA version: ``'recommended'`` (SEA-R1,
            the default), ``'thorough'`` (SEA-T1), ``'2023'`` (the paper) or
            ``'2024'`` (see :data:`~mmseg_robust.attacks.SEA_VERSIONS`).
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
        max_images (int, optional): Only the first ``max_images`` images of
            the dataset (quick look).
        results_dir (str, optional): Where records and outputs go (default
            ``<work_dir>/sea``).
        resume (bool): Continue from the records in ``results_dir``.
        show_dir (str, optional): Save clean and worst-case adversarial
            predictions drawn with MMSeg's visualizer.
        log_interval (int): Log progress every this many batches.
        ignore_index (int, optional): Label of ignored pixels in attacks and
            metrics; default the decode head's (MMSeg's is 255).
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
        norm (str): Threat model: ``'linf'`` (default) or ``'l2'``
            (docs/attacks.md, "The l2 threat model").
        eot (int): Expectation over transformation for randomised models:
            the white-box attacks average each gradient over ``eot``
            passes.
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
        if isinstance(eps, (int, float)):
            eps = [eps]
        try:
            self.norm = check_norm(norm)
            self.eps = sorted({check_radius(e, norm) for e in eps})
        except (TypeError, ValueError) as err:
            raise ConfigError(f'SEATestLoop: {err}') from err
        if not self.eps:
            raise ConfigError('SEATestLoop needs at least one radius (eps)')
        # the ensemble this loop runs (validates version, attacks and
        # n_iter once); each batch and radius uses a copy with its model
        try:
            self.sea = SEA(
                None,
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
        if checks not in TRUST_LEVELS:
            raise ConfigError(f'SEATestLoop: checks={checks!r}: use one of '
                              f'{", ".join(TRUST_LEVELS)}')
        self.checks = checks
        if surrogate is not None and checks == 'none':
            raise ConfigError(
                'a surrogate model is for the transfer check of the trust '
                "report, which checks='none' (--checks none) turns off: "
                'leave out the surrogate or turn the checks on')
        if isinstance(surrogate,
                      dict) and not {'config', 'checkpoint'} <= set(surrogate):
            raise ConfigError('SEATestLoop: surrogate=dict(config=..., '
                              f'checkpoint=...), got {surrogate!r}')
        self.surrogate_spec = surrogate
        self._surrogate = None
        self.uses_class_weights = any(a.loss == 'mask_ce_bal'
                                      for a in self.sea.attacks)
        self.class_weights_spec = class_weights if \
            self.uses_class_weights else None
        self.class_weights: Optional[List[float]] = None
        if max_images is not None and int(max_images) < 1:
            raise ConfigError(f'max_images must be >= 1, got {max_images}')
        self.max_images = None if max_images is None else int(max_images)
        self.resume = bool(resume)
        self.show_dir = show_dir
        self.log_interval = max(int(log_interval), 1)
        if isinstance(dataloader, dict):
            problem = dataset_problem(dataloader.get('dataset') or {})
            if problem:
                raise ConfigError(problem)
        if isinstance(dataloader, dict) and self.max_images is not None:
            dataloader = copy.deepcopy(dataloader)
            dataloader['dataset']['indices'] = self.max_images
        empty = ConfigError(
            'the test dataset is empty: check data_root, data_prefix and '
            'ann_file of test_dataloader.dataset')
        try:
            super().__init__(runner, dataloader, evaluator)
        except ValueError as err:
            # mmengine's serialisation of an empty data list fails so
            if 'need at least one array' in str(err):
                raise empty from err
            raise
        except FileNotFoundError as err:
            raise ConfigError(
                f'the test dataset could not be built: {err}. Check '
                'data_root, data_prefix and ann_file of '
                'test_dataloader.dataset') from err
        problem = dataset_problem(self.dataloader.dataset)
        if problem:
            raise ConfigError(problem)
        if len(self.dataloader.dataset) == 0:
            raise empty
        self.classes = list(self.dataloader.dataset.metainfo['classes'])
        self.ignore_index = int(
            getattr(final_decode_head(unwrap_segmentor(runner.model)),
                    'ignore_index', 255)) if ignore_index is None \
            else int(ignore_index)
        self.metric = self._find_metric()
        self.metric.protocol = self.sea.describe()
        self.metric.norm = self.norm
        self.results_dir = results_dir or osp.join(runner.work_dir, 'sea')
        self._expose_sample_idx()
        self._done: Dict[int, dict] = {}
        self._model_checked = False
        self._classes_checked = False

    @property
    def attack_names(self) -> List[str]:
        return self.sea.names

    @property
    def n_iter(self) -> int:
        return self.sea.n_iter

    # -- set-up ------------------------------------------------------------
    def _find_metric(self) -> SEAMetric:
        for metric in self.evaluator.metrics:
            if isinstance(metric, SEAMetric):
                return metric
        raise ConfigError(
            'SEATestLoop needs test_evaluator=dict(type=\'SEAMetric\'), got '
            f'{[type(m).__name__ for m in self.evaluator.metrics]}; '
            'tools/test.py --eval sea sets both')

    def _expose_sample_idx(self) -> None:
        """Add the dataset index to the packed metainfo: records are keyed
        by it and random starts are seeded with it."""
        pipeline = getattr(self.dataloader.dataset, 'pipeline', None)
        for t in check_pipeline(getattr(pipeline, 'transforms', [])):
            if 'sample_idx' not in t.meta_keys:
                t.meta_keys = tuple(t.meta_keys) + ('sample_idx', )

    def settings(self) -> dict:
        """Everything that changes the numbers (checked on resume, with
        the checkpoint identified by its content, not its path)."""
        if not hasattr(self, '_ckpt_digest'):
            self._ckpt_digest = file_sha256(self.runner.cfg.get('load_from'))
        return OrderedDict(
            eps=self.eps_keys,
            version=self.sea.version,
            n_iter=self.n_iter,
            attacks=self.attack_names,
            tracked={a.name: a.track
                     for a in self.sea.attacks},
            class_weights=self._class_weights_setting(),
            seed=self.sea.seed,
            **self._precision_settings(),
            skip_broken=self.sea.skip_broken,
            chain_radii=self.chain_radii,
            checkpoint_sha256=self._ckpt_digest,
            # only where not the default, so that earlier results resume
            **({} if self.norm == 'linf' else dict(norm=self.norm)),
            **({} if self.sea.eot == 1 else dict(eot=self.sea.eot)))

    @property
    def eps_keys(self) -> List[str]:
        """The radii as results key them (:func:`eps_key`)."""
        return [eps_key(e, self.norm) for e in self.eps]

    def precision(self) -> dict:
        """The precisions on the model's device (``attack``, ``result``;
        see :meth:`SEA.precision`)."""
        return self.sea.precision(self._device())

    def _device(self) -> str:
        return str(next(self.runner.model.parameters()).device)

    def _precision_settings(self) -> dict:
        """``amp`` as results record it: ``False`` for float32 (as earlier
        releases wrote it, so their results resume), else the attack
        precision and the precision of the reported predictions."""
        prec = self.precision()
        if prec['attack'] == 'fp32':
            return dict(amp=False)
        return dict(amp=prec['attack'], result_precision=prec['result'])

    def _class_weights_setting(self):
        if not self.uses_class_weights:
            return None
        if self.class_weights is None:
            return 'image'
        return dict(
            source=self.class_weights_spec if isinstance(
                self.class_weights_spec, str) else 'given',
            weights=[round(w, 6) for w in self.class_weights])

    def _prepare_class_weights(self) -> None:
        """SEA-2024's class weights, resolved once on rank 0 and shared
        (or its error raised on every rank)."""
        if not self.uses_class_weights:
            return
        self.class_weights = run_on_main(
            load_class_weights, self.class_weights_spec, self.runner.cfg,
            len(self.classes), self.ignore_index,
            osp.join(self.results_dir, 'class_weights.json'), self.resume)

    def image_seed(self, idx: int) -> int:
        """Random-start seed of dataset image ``idx``."""
        return zlib.crc32(f'{self.sea.seed}:{idx}'.encode()) + self.sea.seed

    # -- main loop ---------------------------------------------------------
    def run(self) -> dict:
        """Evaluate the whole test set."""
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        if self.channels_last or self.compile is not False:
            accelerate_segmentor(self.runner.model, self.channels_last,
                                 self.compile)
        rank, world_size = get_dist_info()
        # every step below either succeeds on every rank or raises on
        # every rank: a decision of rank 0 is shared with its error
        # (run_on_main), work on each rank exchanges a failure flag
        # (fail_together), so no rank waits for one that has failed
        run_on_main(os.makedirs, self.results_dir, exist_ok=True)
        self._prepare_class_weights()
        self._prepare_surrogate()
        with fail_together('opening the results'):
            self._store = ResultStore(self.results_dir, rank, self.settings())
            self._done = self._store.open(self.resume)
        barrier()
        self._progress = SEAProgress(self.eps_keys,
                                     len(self.dataloader.dataset),
                                     len(self.dataloader), world_size,
                                     self.norm)
        # earlier records enter the metric once (on rank 0; the metric
        # deduplicates by dataset index anyway)
        if rank == 0 and self._done:
            self.evaluator.process(
                data_samples=[dict(sea_record=r) for r in self._done.values()],
                data_batch=None)
            self._progress.add(self._done.values(), new=False)
        self._log_settings(world_size)
        try:
            # as many batches on every rank (the sampler pads); run_iter
            # runs for each, also where resuming leaves nothing to do
            batches = iter(self.dataloader)
            for idx in range(len(self.dataloader)):
                with fail_together(f'batch {idx}'):
                    self.run_iter(idx, next(batches))
        finally:
            self._store.close()
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        run_on_main(self._write_summary, metrics, world_size)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    def _prepare_surrogate(self) -> None:
        """The transfer check's surrogate segmentor, on the model's device
        in eval mode (built from its config and checkpoint on every
        rank)."""
        spec = self.surrogate_spec
        if spec is None:
            return
        with fail_together('loading the surrogate'):
            if isinstance(spec, dict):
                from mmseg_robust.models.surrogate import load_surrogate
                self._surrogate = load_surrogate(spec['config'],
                                                 spec['checkpoint'],
                                                 self._device())
            else:
                self._surrogate = unwrap_segmentor(spec).to(
                    self._device()).eval()

    def _write_summary(self, metrics: dict, world_size: int) -> None:
        """``summary.json`` and the robustness curve (on rank 0)."""
        tables = sea_tables(
            metrics, self.metric.table, self.sea.describe(), norm=self.norm)
        report = self.metric.trust_report
        write_summary(
            self.results_dir,
            metrics,
            self.sea.describe(),
            self.settings(),
            self.runner.cfg.get('load_from'),
            len(self.dataloader.dataset),
            world_size,
            self._progress.elapsed,
            self._done.values(),
            self._device(), {
                k: v
                for k, v in tables.items() if k != 'title'
            },
            self._curve_title(),
            dict(
                self.precision(),
                channels_last=self.channels_last,
                compile=self.compile),
            trust=None if report is None else report.to_dict(),
            xlabel=RADIUS_AXIS[self.norm])

    def _log_settings(self, world_size: int) -> None:
        n = len(self.dataloader.dataset)
        print_log(
            f'SEA evaluation of {n} image(s) on {world_size} process(es): '
            f'radii {[radius_label(k, self.norm) for k in self.eps_keys]} '
            f'({"chained" if self.chain_radii else "independent"}), '
            f'{self.sea.describe()}; seed {self.sea.seed}, precision '
            f'{self._precision_text()}; per-image results in '
            f'{self.results_dir}',
            logger='current')

    def _precision_text(self) -> str:
        prec = self.precision()
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

    def run_iter(self, idx: int, data_batch: dict) -> None:
        """Attack one batch (with gradients, unlike ``TestLoop.run_iter``)."""
        self.runner.call_hook(
            'before_test_iter', batch_idx=idx, data_batch=data_batch)
        samples = data_batch['data_samples']
        keys = [int(s.metainfo['sample_idx']) for s in samples]
        todo = [i for i, k in enumerate(keys) if k not in self._done]
        if todo:
            check_labels([samples[i] for i in todo], len(self.classes),
                         self.ignore_index)
            sub = dict(
                inputs=[data_batch['inputs'][i] for i in todo],
                data_samples=[samples[i] for i in todo])
            self._check_model_classes(sub)
            records = self.attack_batch(sub, [keys[i] for i in todo])
            for rec in records:
                self._done[rec['idx']] = rec
            self._progress.add(records)
            self._store.write(records)
            self.evaluator.process(
                data_samples=[dict(sea_record=r) for r in records],
                data_batch=data_batch)
        if (idx + 1) % self.log_interval == 0 or \
                idx + 1 == len(self.dataloader):
            self._progress.log(idx)
        self.runner.call_hook(
            'after_test_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=None)

    def _check_model_classes(self, data: dict) -> None:
        """Once, on the first image attacked: the model's test-time logits
        have one channel per class of the dataset (one forward pass)."""
        if self._classes_checked:
            return
        one = dict(
            inputs=data['inputs'][:1], data_samples=data['data_samples'][:1])
        batch = AttackBatch.from_data(
            unwrap_segmentor(self.runner.model),
            one,
            mode='test',
            ignore_index=self.ignore_index)
        with torch.no_grad():
            predicted = int(batch.model(batch.x).shape[1])
        self._classes_checked = True
        check_num_classes(predicted, self.classes)

    def attack_batch(self, data: dict, keys: List[int]) -> List[dict]:
        """Clean prediction and SEA at every radius for one batch: one
        record per image (:mod:`mmseg_robust.evaluation.records`), with
        its object-size buckets and, for every prediction, the areas and
        the correct pixels per bucket."""
        batch = AttackBatch.from_data(
            unwrap_segmentor(self.runner.model),
            data,
            mode='test',
            ignore_index=self.ignore_index,
            channels_last=self.channels_last)
        num_classes, ignore = len(self.classes), self.ignore_index
        # objects of each label (at its own size, before padding), once
        sizes = [
            size_buckets(batch.y[i], ignore,
                         tuple(sample.gt_sem_seg.data.shape[-2:]))
            for i, sample in enumerate(data['data_samples'])
        ]

        def areas(pred, i):
            return image_areas(pred, batch.y[i], num_classes, ignore,
                               sizes[i][0])

        seeds = [self.image_seed(k) for k in keys]
        t0 = time.perf_counter()
        clean = self._sea(batch.model, self.eps[0]).clean(batch.x, batch.y)
        self._model_checked = True
        valid = (batch.y != ignore).flatten(1).sum(1)
        records = [
            dict(
                idx=key,
                img_path=sample.metainfo.get('img_path'),
                valid=int(valid[i]),
                size=sizes[i][1],
                clean=areas(clean.pred[i], i),
                eps={},
                worst_attack={})
            for i, (key, sample) in enumerate(zip(keys, data['data_samples']))
        ]
        adversarial = {}
        res = None
        attack_passes = 0
        for eps in self.eps:  # increasing
            with warnings.catch_warnings():
                if self.checks != 'none':
                    # the report's gradient check measures and explains
                    # zero gradients (docs/evaluation.md)
                    warnings.filterwarnings(
                        'ignore', message='the input gradient is zero')
                res = self._sea(batch.model, eps).run(
                    batch.x,
                    batch.y,
                    mask=batch.mask,
                    seed=seeds,
                    clean=clean,
                    previous=res if self.chain_radii else None)
            ek = eps_key(eps, self.norm)
            for i, rec in enumerate(records):
                entry = OrderedDict(worst=areas(res.pred[i], i))
                for name, r in res.attacks.items():
                    entry[name] = areas(r.pred[i], i)
                rec['eps'][ek] = entry
                k = int(res.worst_attack[i])
                rec['worst_attack'][ek] = 'clean' if k == -1 else (
                    'smaller_eps' if k == -2 else self.attack_names[k])
            adversarial[ek] = (res.x_adv, res.pred)
            attack_passes += sum(r.n_evals for r in res.attacks.values())
        elapsed = time.perf_counter() - t0
        for rec in records:
            rec['time'] = elapsed / len(records)
        if self.checks != 'none':
            self._trust(data, batch, keys, seeds, res, records, elapsed,
                        attack_passes)
        if self.show_dir:
            from mmseg_robust.visualization import save_sea_predictions
            save_sea_predictions(self.show_dir, batch, data['data_samples'],
                                 clean.pred, adversarial,
                                 self.dataloader.dataset.metainfo)
        return records

    def _trust(self, data: dict, batch: AttackBatch, keys: List[int],
               seeds: List[int], res, records: List[dict],
               attack_seconds: float, attack_passes: int) -> None:
        """The trust report's measurements on this batch at the largest
        radius, against SEA's per-image worst case there (where a masked
        model's gap to a black-box or one-step attack is largest, and what
        the headline number is), added to each record as ``trust``."""
        budget = TRUST_BUDGETS[self.checks]
        stride = max(int(round(1 / budget.square_share)), 1)
        surrogate = None
        if self._surrogate is not None:
            sur = AttackBatch.from_data(
                self._surrogate,
                data,
                mode='test',
                ignore_index=self.ignore_index)
            surrogate = _fit_input(sur.model, tuple(sur.x.shape[-2:]))
        try:
            report = trust_checks(
                batch.model,
                batch.x,
                batch.y,
                self.eps[-1],
                level=self.checks,
                worst=res.correct,
                ignore_index=self.ignore_index,
                seed=seeds,
                amp=self.sea.amp,
                surrogate=surrogate,
                mask=batch.mask,
                square_images=[
                    i for i, k in enumerate(keys) if k % stride == 0
                ],
                norm=self.norm,
                eot=self.sea.eot)
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
            rec['trust'] = dict(
                m, eps=eps_key(self.eps[-1], self.norm), cost=cost)
            if self.norm != 'linf':
                rec['trust']['norm'] = self.norm

    def _sea(self, model, eps: float) -> SEA:
        """The loop's ensemble at ``eps`` on this batch's model."""
        sea = self.sea.with_eps(eps)
        sea.model = model
        sea.ignore_index = self.ignore_index
        sea.class_weights = None if self.class_weights is None else \
            torch.tensor(self.class_weights)
        # with the trust report on, its determinism check replaces SEA's
        # warning about stochastic models
        sea.check_model = not self._model_checked and self.checks == 'none'
        return sea

    def _curve_title(self) -> str:
        """The config's name and the checkpoint's file name."""
        cfg = self.runner.cfg
        path = getattr(cfg, 'filename', None)
        name = osp.splitext(osp.basename(path))[0] if path else \
            str(self.runner.experiment_name)
        ckpt = cfg.get('load_from')
        return f'{name} ({osp.basename(ckpt)})' if ckpt else name


def _fit_input(model, size: tuple):
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
