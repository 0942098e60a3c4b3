"""SEATestLoop: robustness evaluation of an MMSeg model with SEA."""
import copy
import hashlib
import json
import math
import os
import os.path as osp
import platform
import time
import zlib
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.dist import (barrier, broadcast_object_list, get_dist_info,
                           is_main_process)
from mmengine.logging import print_log
from mmengine.runner import TestLoop

from mmseg.registry import LOOPS
from mmseg_robust.attacks import SEA, check_eps
from mmseg_robust.errors import ConfigError
from mmseg_robust.evaluation.class_weights import resolve_class_weights
from mmseg_robust.evaluation.metrics import SEAMetric
from mmseg_robust.evaluation.records import (RecordWriter, areas, eps_key,
                                             read_records)
from mmseg_robust.models import SegmentorAttackModel, unwrap_segmentor

__all__ = ['SEATestLoop', 'DEFAULT_EPS', 'dataset_problem', 'TTA_PROBLEM']

#: Default radii (4, 8, 12, 16 / 255).
DEFAULT_EPS = (4 / 255, 8 / 255, 12 / 255, 16 / 255)

#: Dataset wrappers of MMEngine and MMSeg (their parts' images share
#: indices, so SEA's per-image records would collide).
DATASET_WRAPPERS = ('ConcatDataset', 'RepeatDataset', 'ClassBalancedDataset',
                    'MultiImageMixDataset')


#: Why a test pipeline with ``TestTimeAug`` is refused.
TTA_PROBLEM = (
    'SEA attacks the plain test-time prediction, but the test pipeline '
    'holds TestTimeAug (test-time augmentation, MMSeg\'s tta_pipeline), '
    'which SEA does not support: use the plain test pipeline '
    '(test_dataloader.dataset.pipeline = test_pipeline; no --tta)')


def dataset_problem(dataset) -> Optional[str]:
    """Why :class:`SEATestLoop` cannot evaluate a test dataset (``None`` if
    it can): it needs one plain dataset, not a wrapper.

    Per-image records and random starts are keyed by ``sample_idx``, the
    index of an image in its own dataset, which restarts at 0 in every part
    of a ``ConcatDataset`` (and repeats in a ``RepeatDataset``).

    Args:
        dataset (dict | Dataset): ``test_dataloader.dataset``, as a config
            or built.

    Returns:
        str or None: The problem, for an error message.
    """
    if isinstance(dataset, dict):
        kind = dataset.get('type')
        kind = getattr(kind, '__name__', kind)
        wrapper = kind in DATASET_WRAPPERS or 'datasets' in dataset or \
            'dataset' in dataset
    else:
        kind = type(dataset).__name__
        wrapper = kind in DATASET_WRAPPERS or not hasattr(
            dataset, 'pipeline') and (hasattr(dataset, 'datasets')
                                      or hasattr(dataset, 'dataset'))
    if not wrapper:
        return None
    return (f'SEA evaluates one plain dataset, but test_dataloader.dataset '
            f'is a {kind}: per-image results are keyed by the index of '
            'each image in its own dataset, which restarts at 0 in every '
            'part of a wrapper. Evaluate each part in its own run (a config '
            'whose test_dataloader.dataset is that part, and its own '
            '--work-dir)')


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


@LOOPS.register_module()
class SEATestLoop(TestLoop):
    """Test loop that evaluates clean and adversarial robustness with SEA.

    For each batch it predicts the clean images and runs, for every radius
    in increasing order, SEA (or the chosen attacks) through
    :class:`SegmentorAttackModel` with gradients enabled. With
    ``chain_radii`` each radius starts from the worst case of the smaller
    one (SPEC section 5): robustness curves are monotone by construction and
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
    (docs/errors.md).

    Args:
        runner: The runner.
        dataloader (DataLoader | dict): The test dataloader.
        evaluator (Evaluator | dict | list): Must contain a
            :class:`SEAMetric`.
        eps (Sequence[float]): Radii as fractions (``4/255``...).
        n_iter (int, optional): Iterations per attack (default: the
            version's, 300 as in the paper).
        attacks (Sequence[str], optional): Attack names (see
            :func:`~mmseg_robust.attacks.parse_attack`) instead of an SEA
            version.
        version (str, optional): SEA version, ``'2023'`` (the paper, the
            default) or ``'2024'`` (see
            :data:`~mmseg_robust.attacks.SEA_VERSIONS`).
        class_weights (str | Sequence[float]): Class weights of the
            ``mask_ce_bal`` attack (SEA-2024): ``'train'`` (inverse
            frequencies of the training labels, counted once and stored in
            ``results_dir``), ``'test'`` (of the evaluated images' labels
            after the test pipeline, as the authors did for PASCAL-VOC),
            ``'image'`` (each image's own) or one number per class.
        seed (int): Base seed of the random starts.
        amp (bool): Mixed precision for the attack's model calls.
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
        fp16 (bool): Unused (kept for TestLoop compatibility; use ``amp``).
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
                 amp: bool = False,
                 skip_broken: bool = True,
                 chain_radii: bool = True,
                 max_images: Optional[int] = None,
                 results_dir: Optional[str] = None,
                 resume: bool = False,
                 show_dir: Optional[str] = None,
                 log_interval: int = 1,
                 fp16: bool = False) -> None:
        if isinstance(eps, (int, float)):
            eps = [eps]
        try:
            self.eps = sorted({check_eps(e) for e in eps})
        except (TypeError, ValueError) as err:
            raise ConfigError(f'SEATestLoop: {err}') from err
        if not self.eps:
            raise ConfigError('SEATestLoop needs at least one radius (eps)')
        # the ensemble at the first radius: validates version, attacks and
        # n_iter once; the other radii are copies (SEA.with_eps)
        try:
            self.sea = SEA(
                None,
                self.eps[0],
                n_iter=n_iter,
                attacks=list(attacks) if attacks else None,
                version=version,
                seed=int(seed),
                skip_broken=bool(skip_broken),
                amp=bool(amp))
        except ValueError as err:
            raise ConfigError(f'SEATestLoop: {err}') from err
        self.specs = self.sea.attacks
        self.attack_names = self.sea.names
        self.n_iter = self.sea.n_iter
        self.seed = int(seed)
        self.amp = bool(amp)
        self.skip_broken = bool(skip_broken)
        self.chain_radii = bool(chain_radii)
        self.uses_class_weights = any(a.loss == 'mask_ce_bal'
                                      for a in self.specs)
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
            super().__init__(runner, dataloader, evaluator, fp16=False)
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
        self.metric = self._find_metric()
        self.metric.protocol = self.sea.describe()
        self.results_dir = results_dir or osp.join(runner.work_dir, 'sea')
        self._expose_sample_idx()
        self._done: Dict[int, dict] = {}
        self._stats: Dict[str, List[int]] = {}
        self._model_checked = False
        self._classes_checked = False

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
        dataset = self.dataloader.dataset
        pipeline = getattr(dataset, 'pipeline', None)
        transforms = getattr(pipeline, 'transforms', [])
        names = [type(t).__name__ for t in transforms]
        if 'TestTimeAug' in names:
            raise ConfigError(TTA_PROBLEM)
        packers = [t for t in transforms if hasattr(t, 'meta_keys')]
        if not packers:
            raise ConfigError(
                'SEATestLoop needs a test pipeline that ends with '
                'PackSegInputs (to carry the dataset index of each image); '
                f'the pipeline is [{", ".join(names)}]')
        for t in packers:
            if 'sample_idx' not in t.meta_keys:
                t.meta_keys = tuple(t.meta_keys) + ('sample_idx', )

    def settings(self) -> dict:
        """Everything that changes the numbers (checked on resume, with
        the checkpoint identified by its content, not its path)."""
        return OrderedDict(
            eps=[eps_key(e) for e in self.eps],
            version=self.sea.version,
            n_iter=self.n_iter,
            attacks=self.attack_names,
            tracked={a.name: a.track for a in self.specs},
            class_weights=self._class_weights_setting(),
            seed=self.seed,
            amp=self.amp,
            skip_broken=self.skip_broken,
            chain_radii=self.chain_radii,
            checkpoint_sha256=self._checkpoint_digest())

    def _class_weights_setting(self):
        if not self.uses_class_weights:
            return None
        if self.class_weights is None:
            return 'image'
        return dict(
            source=self.class_weights_spec if isinstance(
                self.class_weights_spec, str) else 'given',
            weights=[round(w, 6) for w in self.class_weights])

    def _checkpoint_digest(self) -> Optional[str]:
        """SHA-256 of the checkpoint file (computed once)."""
        if not hasattr(self, '_ckpt_digest'):
            path = self.runner.cfg.get('load_from')
            digest = None
            if path and osp.isfile(path):
                h = hashlib.sha256()
                with open(path, 'rb') as f:
                    for block in iter(lambda: f.read(1 << 22), b''):
                        h.update(block)
                digest = h.hexdigest()
            self._ckpt_digest = digest
        return self._ckpt_digest

    def _prepare_class_weights(self, rank: int) -> None:
        """Resolve SEA-2024's class weights once (rank 0 counts the
        training labels and shares them; stored beside the results)."""
        if not self.uses_class_weights:
            return
        ignore = self.metric.ignore_index
        num_classes = len(self.dataloader.dataset.metainfo['classes'])
        path = osp.join(self.results_dir, 'class_weights.json')
        out = [None]
        if rank == 0:
            spec = self.class_weights_spec
            weights = None
            if spec in ('train', 'test') and osp.isfile(path):
                with open(path, encoding='utf-8') as f:
                    stored = json.load(f)
                if stored.get('num_classes') == num_classes and \
                        stored.get('source') == spec:
                    weights = stored['weights']
            if weights is None:
                if spec in ('train', 'test'):
                    print_log(
                        f'SEA-2024: counting the {spec} labels for the '
                        'class weights of mask_ce_bal (once; stored in '
                        f'{path})',
                        logger='current')
                weights = resolve_class_weights(spec, self.runner.cfg,
                                                num_classes, ignore)
                # on resume an existing file stays as it is: other weights
                # are refused with the other settings, nothing is lost
                if weights is not None and not (self.resume
                                                and osp.isfile(path)):
                    with open(path, 'w', encoding='utf-8') as f:
                        json.dump(dict(source=spec if isinstance(
                            spec, str) else 'given', num_classes=num_classes,
                                       weights=weights), f, indent=1)
            out = [weights]
        broadcast_object_list(out)
        self.class_weights = out[0]

    def image_seed(self, idx: int) -> int:
        """Random-start seed of dataset image ``idx``."""
        return zlib.crc32(f'{self.seed}:{idx}'.encode()) + self.seed

    def _results_file(self, rank: int) -> str:
        return osp.join(self.results_dir, f'rank{rank}.jsonl')

    def _load_previous(self, rank: int) -> RecordWriter:
        """Read earlier records (resume) and open this rank's file."""
        header = json.loads(json.dumps(self.settings()))
        keep: List[dict] = []
        if self.resume:
            files = sorted(f for f in (os.listdir(self.results_dir)
                                       if osp.isdir(self.results_dir) else [])
                           if f.startswith('rank') and f.endswith('.jsonl'))
            for name in files:
                path = osp.join(self.results_dir, name)
                old_header, records, bad = read_records(path)
                if old_header is not None and old_header != header:
                    diff = {
                        k: (old_header.get(k), header.get(k))
                        for k in header if old_header.get(k) != header.get(k)
                    }
                    raise ConfigError(
                        f'cannot resume from {path}: it was produced with '
                        f'other settings (old, new): {diff}. Use the same '
                        'settings, or another --work-dir to start afresh.')
                if bad:
                    print_log(
                        f'{path}: {bad} unreadable line(s) (interrupted '
                        'write?); those images are evaluated again',
                        logger='current',
                        level=30)
                for rec in records:
                    self._done.setdefault(rec['idx'], rec)
                if name == f'rank{rank}.jsonl':
                    keep = records
            if self._done:
                print_log(
                    f'SEA: resuming, {len(self._done)} image(s) already '
                    f'evaluated in {self.results_dir}',
                    logger='current')
        else:
            self._archive_old_results(rank)
        return RecordWriter(self._results_file(rank), header, keep)

    def _archive_old_results(self, rank: int) -> None:
        """Never overwrite earlier results: move them aside."""
        path = self._results_file(rank)
        if osp.exists(path):
            stamp = time.strftime('%Y%m%d_%H%M%S')
            os.replace(path, f'{path}.{stamp}.bak')
            print_log(
                f'SEA: moved earlier results {path} to {path}.{stamp}.bak '
                '(use --resume to continue them instead)',
                logger='current')

    # -- main loop ---------------------------------------------------------
    def run(self) -> dict:
        """Evaluate the whole test set."""
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        rank, world_size = get_dist_info()
        if is_main_process():
            os.makedirs(self.results_dir, exist_ok=True)
        barrier()
        self._prepare_class_weights(rank)
        self._writer = self._load_previous(rank)
        barrier()
        # earlier records enter the metric once (on rank 0; the metric
        # deduplicates by dataset index anyway)
        if rank == 0 and self._done:
            self.evaluator.process(
                data_samples=[dict(sea_record=r) for r in self._done.values()],
                data_batch=None)
        for rec in (self._done.values() if rank == 0 else []):
            self._update_stats(rec)
        self._start = time.perf_counter()
        self._n_new = 0
        self._n_seen = len(self._done) if rank == 0 else 0
        self._log_settings(world_size)
        try:
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        finally:
            self._writer.close()
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        elapsed = time.perf_counter() - self._start
        if is_main_process():
            self._write_outputs(metrics, elapsed, world_size)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    def _check_model_classes(self, data: dict) -> None:
        """Once, on the first image attacked: the model's test-time logits
        have one channel per class of the dataset (one forward pass)."""
        if self._classes_checked:
            return
        classes = list(self.dataloader.dataset.metainfo['classes'])
        one = dict(inputs=data['inputs'][:1],
                   data_samples=data['data_samples'][:1])
        batch = SegmentorAttackModel.from_batch(
            unwrap_segmentor(self.runner.model), one, mode='test',
            ignore_index=self.metric.ignore_index)
        with torch.no_grad():
            predicted = int(batch.model(batch.x).shape[1])
        self._classes_checked = True
        if predicted != len(classes):
            shown = ', '.join(map(str, classes[:5])) + \
                (', ...' if len(classes) > 5 else '')
            raise ConfigError(
                f'the model predicts {predicted} classes but the test '
                f'dataset has {len(classes)} ({shown}): check '
                'model.decode_head.num_classes and the classes (metainfo) '
                'of test_dataloader.dataset (a model trained with an extra '
                'class is evaluated with type=\'ClassSubsetEncoderDecoder\', '
                'drop_classes=[...])')

    def _check_labels(self, samples: Sequence) -> None:
        """Refuse images without labels or with labels outside the classes
        (before anything of their batch is attacked or recorded).

        Args:
            samples (Sequence[SegDataSample]): The batch's data samples.

        Raises:
            ConfigError: A sample has no ``gt_sem_seg``, or a label that is
                neither a class index nor ``ignore_index``.
        """
        num_classes = len(self.dataloader.dataset.metainfo['classes'])
        ignore = self.metric.ignore_index
        for s in samples:
            name = s.metainfo.get('img_path', s.metainfo.get('sample_idx'))
            if 'gt_sem_seg' not in s:
                raise ConfigError(
                    f'{name} has no ground-truth labels (gt_sem_seg): SEA '
                    'needs them; add dict(type=\'LoadAnnotations\') to the '
                    'test pipeline, before PackSegInputs')
            label = s.gt_sem_seg.data
            bad = (label != ignore) & ((label < 0) | (label >= num_classes))
            if bool(bad.any()):
                values = torch.unique(label[bad]).tolist()
                raise ConfigError(
                    f'labels out of range: the label map of {name} '
                    f'({s.metainfo.get("seg_map_path")}) holds '
                    f'{values[:8]}, but the dataset has {num_classes} '
                    f'classes (0-{num_classes - 1}) and ignore_index '
                    f'{ignore}. Check the classes, reduce_zero_label and '
                    'ignore_index of test_dataloader.dataset and '
                    'test_evaluator')

    def _log_settings(self, world_size: int) -> None:
        n = len(self.dataloader.dataset)
        print_log(
            f'SEA evaluation of {n} image(s) on {world_size} process(es): '
            f'radii {[eps_key(e) for e in self.eps]} /255 '
            f'({"chained" if self.chain_radii else "independent"}), '
            f'{self.sea.describe()}; seed {self.seed}, amp {self.amp}; '
            f'per-image results in {self.results_dir}',
            logger='current')

    def run_iter(self, idx: int, data_batch: dict) -> None:
        """Attack one batch (with gradients, unlike ``TestLoop.run_iter``)."""
        self.runner.call_hook(
            'before_test_iter', batch_idx=idx, data_batch=data_batch)
        samples = data_batch['data_samples']
        keys = [int(s.metainfo['sample_idx']) for s in samples]
        todo = [i for i, k in enumerate(keys) if k not in self._done]
        records = []
        if todo:
            self._check_labels([samples[i] for i in todo])
            sub = dict(
                inputs=[data_batch['inputs'][i] for i in todo],
                data_samples=[samples[i] for i in todo])
            self._check_model_classes(sub)
            records = self.attack_batch(sub, [keys[i] for i in todo])
            for rec in records:
                self._done[rec['idx']] = rec
                self._update_stats(rec)
            self._writer.write(records)
            self.evaluator.process(
                data_samples=[dict(sea_record=r) for r in records],
                data_batch=data_batch)
            self._n_new += len(records)
        self._n_seen += len(todo)
        if (idx + 1) % self.log_interval == 0 or \
                idx + 1 == len(self.dataloader):
            self._log_progress(idx)
        self.runner.call_hook(
            'after_test_iter', batch_idx=idx, data_batch=data_batch,
            outputs=None)

    def attack_batch(self, data: dict, keys: List[int]) -> List[dict]:
        """Clean prediction and SEA at every radius for one batch."""
        segmentor = unwrap_segmentor(self.runner.model)
        batch = SegmentorAttackModel.from_batch(
            segmentor, data, mode='test',
            ignore_index=self.metric.ignore_index)
        num_classes = len(self.dataloader.dataset.metainfo['classes'])
        ignore = self.metric.ignore_index
        seeds = [self.image_seed(k) for k in keys]
        t0 = time.perf_counter()
        sea0 = self._sea(batch.model, self.eps[0])
        clean_pred, clean_correct, valid = sea0.clean(batch.x, batch.y)
        self._model_checked = True
        records = []
        for i, (key, sample) in enumerate(zip(keys, data['data_samples'])):
            records.append(
                dict(
                    idx=key,
                    img_path=sample.metainfo.get('img_path'),
                    valid=int(valid[i]),
                    clean=areas(clean_pred[i], batch.y[i], num_classes,
                                ignore),
                    eps={},
                    worst_attack={}))
        adversarial = {}
        res = None
        for eps in self.eps:  # increasing
            sea = self._sea(batch.model, eps)
            res = sea.run(
                batch.x,
                batch.y,
                mask=batch.mask,
                seed=seeds,
                clean=(clean_pred, clean_correct),
                previous=res if self.chain_radii else None)
            ek = eps_key(eps)
            for i, rec in enumerate(records):
                entry = OrderedDict(
                    worst=areas(res.pred[i], batch.y[i], num_classes,
                                ignore))
                for name, r in res.attacks.items():
                    entry[name] = areas(r.pred[i], batch.y[i], num_classes,
                                        ignore)
                rec['eps'][ek] = entry
                k = int(res.worst_attack[i])
                rec['worst_attack'][ek] = 'clean' if k == -1 else (
                    'smaller_eps' if k == -2 else self.attack_names[k])
            adversarial[ek] = (res.x_adv, res.pred)
        elapsed = time.perf_counter() - t0
        for rec in records:
            rec['time'] = elapsed / len(records)
        if self.show_dir:
            self._show(batch, data['data_samples'], clean_pred, adversarial)
        return records

    def _sea(self, model, eps: float) -> SEA:
        sea = self.sea.with_eps(eps)
        sea.model = model
        sea.ignore_index = self.metric.ignore_index
        sea.class_weights = None if self.class_weights is None else \
            torch.tensor(self.class_weights)
        sea.check_model = not self._model_checked
        return sea

    # -- progress ----------------------------------------------------------
    def _update_stats(self, rec: dict) -> None:
        stats = self._stats.setdefault('clean', [0, 0])
        stats[0] += rec['clean']['correct']
        stats[1] += rec['valid']
        for ek, entry in rec['eps'].items():
            s = self._stats.setdefault(ek, [0, 0])
            s[0] += entry['worst']['correct']
            s[1] += rec['valid']

    def _log_progress(self, idx: int) -> None:
        rank, world_size = get_dist_info()
        total = len(self.dataloader.dataset)
        # each rank sees its shard: estimate the global count
        done = min(self._n_seen * world_size, total)
        elapsed = time.perf_counter() - self._start
        remaining_batches = len(self.dataloader) - idx - 1
        per_batch = elapsed / max(idx + 1, 1)
        eta = per_batch * remaining_batches if self._n_new else float('nan')

        def acc(key):
            c, v = self._stats.get(key, (0, 0))
            return f'{100 * c / v:.1f}' if v else '-'

        robust = ', '.join(f'{k}/255: {acc(k)}'
                           for k in [eps_key(e) for e in self.eps])
        print_log(
            f'SEA [{idx + 1}/{len(self.dataloader)}] images {done}/{total}, '
            f'elapsed {_fmt_time(elapsed)}, ETA {_fmt_time(eta)} | aAcc '
            f'clean {acc("clean")}, worst {robust}'
            + (' (this rank)' if world_size > 1 else ''),
            logger='current')

    # -- outputs -----------------------------------------------------------
    def _write_outputs(self, metrics: dict, elapsed: float,
                       world_size: int) -> None:
        import mmcv
        import mmengine

        import mmseg
        import mmseg_robust
        times = [r['time'] for r in self._done.values() if 'time' in r]
        summary = OrderedDict(
            metrics=metrics,
            protocol=self.sea.describe(),
            settings=self.settings(),
            checkpoint=self.runner.cfg.get('load_from'),
            n_images=len(self.dataloader.dataset),
            world_size=world_size,
            timing=dict(
                wall_seconds_this_run=elapsed,
                attack_seconds_per_image=(sum(times) / len(times)
                                          if times else None)),
            versions=dict(
                mmseg_robust=mmseg_robust.__version__,
                torch=torch.__version__,
                mmseg=mmseg.__version__,
                mmengine=mmengine.__version__,
                mmcv=mmcv.__version__,
                python=platform.python_version()),
            device=str(next(self.runner.model.parameters()).device),
            tables=self.metric.last_tables)
        path = osp.join(self.results_dir, 'summary.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(summary, f, indent=2, default=float)
        curve = osp.join(self.results_dir, 'robustness_curve.png')
        try:
            from mmseg_robust.visualization import plot_robustness_curve
            plot_robustness_curve(metrics, curve, title=self._curve_title())
        except ImportError as err:  # matplotlib missing
            print_log(f'no robustness curve: {err}', logger='current',
                      level=30)
            curve = None
        print_log(
            f'SEA results: {path}' + (f', curve: {curve}' if curve else ''),
            logger='current')

    def _curve_title(self) -> str:
        """The config's name and the checkpoint's file name."""
        cfg = self.runner.cfg
        path = getattr(cfg, 'filename', None)
        name = osp.splitext(osp.basename(path))[0] if path else \
            str(self.runner.experiment_name)
        ckpt = cfg.get('load_from')
        return f'{name} ({osp.basename(ckpt)})' if ckpt else name

    def _show(self, batch, samples, clean_pred, adversarial) -> None:
        from mmseg_robust.visualization import save_sea_predictions
        save_sea_predictions(self.show_dir, batch, samples, clean_pred,
                             adversarial,
                             self.dataloader.dataset.metainfo)
