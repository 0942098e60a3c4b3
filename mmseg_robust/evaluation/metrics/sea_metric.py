"""SEAMetric: clean and robust aAcc / mIoU / mAcc per radius and attack."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.dist import (all_gather_object, broadcast_object_list,
                           is_main_process)
from mmengine.logging import MMLogger, print_log
from prettytable import PrettyTable

from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from ..records import sum_areas

__all__ = ['SEAMetric']


def _sorted_eps(keys):
    return sorted(keys, key=float)


@METRICS.register_module()
class SEAMetric(IoUMetric):
    """Robust segmentation metrics from :class:`SEATestLoop` records.

    Same definitions as MMSeg's :class:`IoUMetric` (SPEC section 6): ``aAcc``
    pools correct and valid pixels over the dataset; ``mIoU`` / ``mAcc``
    average over classes with a non-empty union the ratios of areas summed
    over the dataset. For every radius the areas come from each attack's
    adversarial prediction and from the worst case (per image, the attack
    with the lowest pixel accuracy).

    ``compute_metrics`` returns a flat dict (keys ``sea/clean/mIoU``,
    ``sea/eps4/worst/mIoU``, ``sea/eps4/mask_ce/aAcc``, ...; also
    ``mImgAcc``, the mean of per-image accuracies over images with valid
    pixels, and ``sea/n_images``, ``sea/n_no_valid``) and logs a table like
    the paper's: rows clean and each radius, columns aAcc / mIoU / mAcc per
    attack and for the worst case.

    Args:
        per_class (bool): Also log per-class IoU of the worst case.
        prefix (str): Key prefix (default ``'sea'``).
        **kwargs: Passed to :class:`IoUMetric` (``ignore_index``,
            ``iou_metrics``, ``nan_to_num``, ``collect_device``...).
    """

    default_prefix = 'sea'

    def __init__(self,
                 per_class: bool = False,
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        kwargs.setdefault('iou_metrics', ['mIoU'])
        super().__init__(prefix=prefix, **kwargs)
        self.per_class = per_class
        self.last_tables: Dict[str, str] = {}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Collect the per-image records the SEA test loop attaches."""
        for sample in data_samples:
            record = sample.get('sea_record') if isinstance(sample,
                                                            dict) else None
            if record is None:
                raise ValueError(
                    'SEAMetric expects records from SEATestLoop (data '
                    "samples with 'sea_record'); use test_cfg=dict(type="
                    "'SEATestLoop', ...) or tools/test.py --eval sea")
            self.results.append(record)

    def evaluate(self, size: int) -> dict:
        """Gather records from all ranks (deduplicated by dataset index, so
        sampler padding and resumed images count once) and compute."""
        gathered = all_gather_object(self.results)
        if is_main_process():
            unique = OrderedDict()
            for part in gathered:
                for rec in part:
                    unique.setdefault(rec['idx'], rec)
            records = [unique[k] for k in sorted(unique)]
            if not records:
                print_log(
                    'SEAMetric got no results: is the dataset empty?',
                    logger='current',
                    level=30)
            metrics = self.compute_metrics(records)
            if self.prefix:
                metrics = {f'{self.prefix}/{k}': v for k, v in metrics.items()}
            out = [metrics]
        else:
            out = [None]
        broadcast_object_list(out)
        self.results.clear()
        return out[0]

    # -- computation -------------------------------------------------------
    def _summary(self, records: List[dict], select, num_classes: int,
                 correct_of) -> Dict[str, float]:
        inter, union, pred, label = sum_areas(records, select, num_classes)
        ret = self.total_area_to_metrics(inter, union, pred, label,
                                         self.metrics, self.nan_to_num,
                                         self.beta)
        out = OrderedDict()
        for key, val in ret.items():
            name = key if key == 'aAcc' else 'm' + key
            with np.errstate(invalid='ignore'):
                value = np.nanmean(val) if np.size(val) else np.nan
            out[name] = float(np.round(value * 100, 2))
        img_acc = [
            correct_of(r) / r['valid'] for r in records if r['valid'] > 0
        ]
        out['mImgAcc'] = float(np.round(np.mean(img_acc) * 100, 2)) \
            if img_acc else float('nan')
        out['_IoU'] = ret.get('IoU')
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Metrics from the list of per-image records."""
        logger = MMLogger.get_current_instance()
        num_classes = len(self.dataset_meta['classes'])
        metrics: Dict[str, float] = OrderedDict()
        if not results:
            return metrics
        eps_keys = _sorted_eps(results[0]['eps'])
        attacks = [k for k in results[0]['eps'][eps_keys[0]]
                   if k != 'worst'] if eps_keys else []
        table = OrderedDict()
        per_class = OrderedDict()
        clean = self._summary(results, lambda r: r['clean'], num_classes,
                              lambda r: r['clean']['correct'])
        table['clean'] = {'clean': clean}
        per_class['clean'] = clean.pop('_IoU')
        for k, v in clean.items():
            metrics[f'clean/{k}'] = v
        for e in eps_keys:
            row = OrderedDict()
            for name in ['worst'] + attacks:
                summ = self._summary(
                    results, lambda r, e=e, n=name: r['eps'][e][n],
                    num_classes, lambda r, e=e, n=name: r['eps'][e][n][
                        'correct'])
                iou = summ.pop('_IoU')
                if name == 'worst':
                    per_class[f'eps{e}'] = iou
                row[name] = summ
                for k, v in summ.items():
                    metrics[f'eps{e}/{name}/{k}'] = v
            table[f'eps{e}'] = row
        metrics['n_images'] = len(results)
        metrics['n_no_valid'] = sum(1 for r in results if r['valid'] == 0)
        self._log_tables(table, per_class, attacks, logger)
        return metrics

    def _log_tables(self, table, per_class, attacks, logger) -> None:
        cols = [m for m in ('aAcc', 'mIoU', 'mAcc', 'mDice', 'mFscore')
                if m in table['clean']['clean']]
        t = PrettyTable()
        t.field_names = ['radius'] + [
            f'{name} {m}' for name in ['worst'] + attacks for m in cols
        ]
        for row_name, row in table.items():
            cells = [row_name if row_name == 'clean' else
                     row_name.replace('eps', '') + '/255']
            for name in ['worst'] + attacks:
                src = row.get(name, row.get('clean'))
                cells += [f'{src[m]:.2f}' for m in cols]
            t.add_row(cells)
        self.last_tables['summary'] = t.get_string()
        print_log('SEA robustness (worst case = per image the attack with '
                  'the lowest pixel accuracy):\n' + t.get_string(),
                  logger=logger)
        if self.per_class:
            c = PrettyTable()
            c.add_column('Class', list(self.dataset_meta['classes']))
            for name, iou in per_class.items():
                c.add_column(
                    'clean IoU' if name == 'clean' else
                    f'worst IoU {name[3:]}/255',
                    [f'{v * 100:.2f}' for v in np.asarray(iou)])
            self.last_tables['per_class'] = c.get_string()
            print_log('per-class IoU, clean and worst case:\n' +
                      c.get_string(), logger=logger)
