"""One batch of :class:`SEATestLoop`: the clean prediction and SEA at every
radius, one record per image, and the predictions as MMSeg's hooks expect
them on the batch's data samples."""
import os
import os.path as osp
import time
import warnings
import zlib
from collections import OrderedDict
from dataclasses import replace
from typing import Callable, List, Optional, Sequence, Union

import torch
from mmengine.structures import PixelData

from mmseg_robust.adapter import (AttackBatch, accelerate_segmentor,
                                  unwrap_segmentor)
from mmseg_robust.attacks import SEASettings, sea_clean
from mmseg_robust.attacks.trust import trust_checks
from mmseg_robust.evaluation.dist_guard import fail_together, run_on_main
from mmseg_robust.evaluation.object_sizes import size_buckets
from mmseg_robust.evaluation.records import eps_key, image_areas
from .sea_checks import check_num_classes
from .sea_options import SEAOptions
from .sea_trust import load_surrogate_model, measure_trust

__all__ = ['SEABatchAttack', 'attach_predictions', 'CLEAN_PRED_FIELD']

#: The data-sample field that holds the clean prediction (``pred_sem_seg``
#: holds the worst case at the largest radius).
CLEAN_PRED_FIELD = 'clean_pred_sem_seg'


def attach_predictions(samples: Sequence, clean_pred: torch.Tensor,
                       worst_pred: torch.Tensor) -> None:
    """Put each image's predictions on its data sample, as MMSeg's
    ``postprocess_result`` does: ``pred_sem_seg``, the worst case over the
    ensemble at the largest radius, and ``clean_pred_sem_seg``, the clean
    prediction, each a ``PixelData`` of shape ``(1, H, W)`` at the size of
    the sample's ``gt_sem_seg`` (the padding of the batch cut off)."""
    for i, sample in enumerate(samples):
        h, w = sample.gt_sem_seg.data.shape[-2:]
        sample.pred_sem_seg = PixelData(data=worst_pred[i, :h, :w][None])
        sample.set_field(
            PixelData(data=clean_pred[i, :h, :w][None]), CLEAN_PRED_FIELD)


class SEABatchAttack:
    """The per-batch work of :class:`SEATestLoop`.

    Args:
        options (SEAOptions): The ensemble and its options (its class
            weights are read at each batch, once resolved).
        ignore_index (int): The ignored label.
        num_classes (int): Classes of the dataset.
        checks (str): The trust report's level (``'none'``: off).
        show_dir (str, optional): Where to draw the predictions.
    """

    def __init__(self,
                 options: SEAOptions,
                 ignore_index: int,
                 num_classes: int,
                 checks: str = 'fast',
                 show_dir: Optional[str] = None) -> None:
        self.options = options
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.checks = checks
        self.show_dir = show_dir
        #: the transfer check's surrogate, once loaded
        self.surrogate: Optional[torch.nn.Module] = None
        self.model_checked = False
        self.classes_checked = False

    def prepare(self, segmentor, cfg, results_dir: str, resume: bool,
                surrogate: Union[None, dict,
                                 torch.nn.Module], device: str) -> None:
        """Before the first batch, on every rank: the segmentor
        accelerated as the options say, ``results_dir`` made, SEA-2024's
        class weights resolved (stored there; :meth:`SEAOptions.
        resolve_class_weights`) and the transfer check's ``surrogate``
        loaded. Each step succeeds on every rank or raises on every rank
        (a decision of rank 0 is shared with its error, ``run_on_main``;
        work on each rank exchanges a failure flag, ``fail_together``)."""
        opts = self.options
        if opts.channels_last or opts.compile is not False:
            accelerate_segmentor(segmentor, opts.channels_last, opts.compile)
        run_on_main(os.makedirs, results_dir, exist_ok=True)
        opts.resolve_class_weights(cfg, self.num_classes, self.ignore_index,
                                   osp.join(results_dir, 'class_weights.json'),
                                   resume)
        if surrogate is not None:
            with fail_together('loading the surrogate'):
                self.surrogate = load_surrogate_model(surrogate, device)

    def image_seed(self, idx: int) -> int:
        """Random-start seed of dataset image ``idx``."""
        seed = self.options.sea.seed
        return zlib.crc32(f'{seed}:{idx}'.encode()) + seed

    def check_model_classes(self, segmentor, data: dict,
                            classes: Sequence) -> None:
        """Once, on the first image attacked: the model's test-time logits
        have one channel per class of the dataset (one forward pass)."""
        if self.classes_checked:
            return
        one = dict(
            inputs=data['inputs'][:1], data_samples=data['data_samples'][:1])
        batch = AttackBatch.from_data(
            unwrap_segmentor(segmentor),
            one,
            mode='test',
            ignore_index=self.ignore_index)
        with torch.no_grad():
            predicted = int(batch.model(batch.x).shape[1])
        self.classes_checked = True
        check_num_classes(predicted, classes)

    def ensemble(self, eps: float) -> SEASettings:
        """The loop's ensemble at ``eps``: its settings with the loop's
        ignored label and (once resolved) class weights."""
        weights = self.options.class_weights
        return replace(
            self.options.sea,
            eps=eps,
            ignore_index=self.ignore_index,
            class_weights=None if weights is None else torch.tensor(weights))

    def attack(self,
               segmentor,
               data: dict,
               keys: List[int],
               dataset_meta: dict,
               trust_fn: Callable = trust_checks) -> List[dict]:
        """Clean prediction and SEA at every radius for one batch: one
        record per image (:mod:`mmseg_robust.evaluation.records`), with
        its object-size buckets and, for every prediction, the areas and
        the correct pixels per bucket; ``trust_fn``: the trust checks
        (:func:`measure_trust`). The data samples get the predictions
        (:func:`attach_predictions`)."""
        opts = self.options
        batch = AttackBatch.from_data(
            unwrap_segmentor(segmentor),
            data,
            mode='test',
            ignore_index=self.ignore_index,
            channels_last=opts.channels_last)
        num_classes, ignore = self.num_classes, self.ignore_index
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
        # with the trust report on, its determinism check replaces SEA's
        # warning about stochastic models
        clean = sea_clean(
            self.ensemble(opts.eps[0]),
            batch.model,
            batch.x,
            batch.y,
            check_model=not self.model_checked and self.checks == 'none')
        self.model_checked = True
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
        res = sea = None
        attack_passes = 0
        for eps in opts.eps:  # increasing
            sea = self.ensemble(eps)
            with warnings.catch_warnings():
                if self.checks != 'none':
                    # the report's gradient check measures and explains
                    # zero gradients (docs/evaluation.md)
                    warnings.filterwarnings(
                        'ignore', message='the input gradient is zero')
                res = sea(
                    batch.model,
                    batch.x,
                    batch.y,
                    mask=batch.mask,
                    seed=seeds,
                    clean=clean,
                    previous=res if opts.chain_radii else None)
            ek = eps_key(eps, opts.norm)
            for i, rec in enumerate(records):
                entry = OrderedDict(worst=areas(res.pred[i], i))
                for name, r in res.attacks.items():
                    entry[name] = areas(r.pred[i], i)
                rec['eps'][ek] = entry
                k = int(res.worst_attack[i])
                rec['worst_attack'][ek] = 'clean' if k == -1 else (
                    'smaller_eps' if k == -2 else opts.sea.names[k])
            adversarial[ek] = (res.x_adv, res.pred)
            attack_passes += sum(r.n_evals for r in res.attacks.values())
        elapsed = time.perf_counter() - t0
        for rec in records:
            rec['time'] = elapsed / len(records)
        if self.checks != 'none':
            measure_trust(sea, self.checks, data, batch, keys, seeds, res,
                          records, elapsed, attack_passes, self.surrogate,
                          trust_fn)
        if self.show_dir:
            from mmseg_robust.visualization import save_sea_predictions
            save_sea_predictions(self.show_dir, batch, data['data_samples'],
                                 clean.pred, adversarial, dataset_meta)
        attach_predictions(data['data_samples'], clean.pred, res.pred)
        return records
