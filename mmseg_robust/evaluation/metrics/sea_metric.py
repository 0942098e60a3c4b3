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
from mmseg_robust.attacks import worst_case_miou
from mmseg_robust.errors import ConfigError
from ..records import dense_areas, sum_areas

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
    adversarial prediction, from the worst case (``worst``: per image, the
    output with the lowest pixel accuracy) and from the worst case by mIoU
    (``worst_miou``: per image the output, among all attacks' at this and
    smaller radii, chosen by a local search to minimise the dataset mIoU;
    the SEA-2024 aggregation, never above ``worst``'s mIoU nor above the
    smaller radius's ``worst_miou``; see :func:`~mmseg_robust.attacks.
    worst_case_miou`).

    ``compute_metrics`` returns a flat dict (keys ``sea/clean/mIoU``,
    ``sea/eps4/worst/mIoU``, ``sea/eps4/worst_miou/mIoU``,
    ``sea/eps4/mask_ce/aAcc``, ...; also ``mImgAcc``, the mean of per-image
    accuracies over images with valid pixels, and ``sea/n_images``,
    ``sea/n_no_valid``) and logs tables like the paper's.

    Args:
        per_class (bool): Also log per-class IoU of the worst case.
        worst_miou (bool): Compute the worst case by mIoU.
        table (str): ``'compact'`` (a worst-case table and an attack table,
            one cell per attack), ``'per_radius'`` (one table per radius,
            a row per attack) or ``'wide'`` (one table, a column per attack
            and metric).
        prefix (str): Key prefix (default ``'sea'``).
        **kwargs: Passed to :class:`IoUMetric` (``ignore_index``,
            ``iou_metrics``, ``nan_to_num``, ``collect_device``...).
    """

    default_prefix = 'sea'
    TABLES = ('compact', 'per_radius', 'wide')

    def __init__(self,
                 per_class: bool = False,
                 worst_miou: bool = True,
                 table: str = 'compact',
                 prefix: Optional[str] = None,
                 **kwargs) -> None:
        kwargs.setdefault('iou_metrics', ['mIoU'])
        super().__init__(prefix=prefix, **kwargs)
        if table not in self.TABLES:
            raise ConfigError(f'table={table!r}: use one of {self.TABLES}')
        self.per_class = per_class
        self.worst_miou = worst_miou
        self.table = table
        #: set by SEATestLoop: the protocol (SEA version, iterations,
        #: tracked objectives) named in the table title
        self.protocol: Optional[str] = None
        self.last_tables: Dict[str, str] = {}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Collect the per-image records the SEA test loop attaches."""
        for sample in data_samples:
            record = sample.get('sea_record') if isinstance(sample,
                                                            dict) else None
            if record is None:
                raise ConfigError(
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

    def _worst_miou(self, results: List[dict], eps_keys: List[str],
                    names: List[str], num_classes: int) -> Dict[str, list]:
        """Per radius, the record entry each image contributes to the worst
        case by mIoU: ``{eps: [(eps_key, name) per image]}``."""
        n = len(results)
        cands: List[tuple] = []
        inter = np.zeros((n, 0, num_classes))
        union = np.zeros((n, 0, num_classes))
        prev = None
        out = {}
        for e in eps_keys:
            new = [(e, name) for name in names]
            block_i = np.zeros((n, len(new), num_classes))
            block_u = np.zeros((n, len(new), num_classes))
            for i, rec in enumerate(results):
                for a, (ek, name) in enumerate(new):
                    d_i, d_u, _, _ = dense_areas(rec['eps'][ek][name],
                                                 num_classes)
                    block_i[i, a], block_u[i, a] = d_i, d_u
            first_new = len(cands)
            cands += new
            inter = np.concatenate([inter, block_i], 1)
            union = np.concatenate([union, block_u], 1)
            # starts: the per-image worst case by accuracy, the smaller
            # radius's selection, and "every image takes attack a" here
            starts = [np.full(n, first_new + names.index('worst'))]
            if prev is not None:
                starts.append(prev)
            starts += [np.full(n, first_new + a) for a in range(len(new))]
            found = worst_case_miou(inter, union, starts=starts,
                                    uniform_starts=False)
            prev = found['choice']
            out[e] = [cands[c] for c in prev]
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
        selected = self._worst_miou(results, eps_keys, ['worst'] + attacks,
                                    num_classes) if (self.worst_miou and
                                                     eps_keys) else {}
        for e in eps_keys:
            row = OrderedDict()
            sources = [(name, lambda r, e=e, n=name: r['eps'][e][n])
                       for name in ['worst'] + attacks]
            if e in selected:
                choice = {r['idx']: c for r, c in zip(results, selected[e])}
                sources.insert(1, ('worst_miou', lambda r, c=choice: r[
                    'eps'][c[r['idx']][0]][c[r['idx']][1]]))
            for name, select in sources:
                summ = self._summary(results, select, num_classes,
                                     lambda r, s=select: s(r)['correct'])
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

    def _title(self) -> str:
        protocol = f' [{self.protocol}]' if self.protocol else ''
        return (f'SEA robustness{protocol}. worst = per image the output '
                'with the lowest pixel accuracy' +
                ('; worst_miou = per-image choice minimising the dataset '
                 'mIoU' if self.worst_miou else ''))

    def _log_tables(self, table, per_class, attacks, logger) -> None:
        cols = [m for m in ('aAcc', 'mIoU', 'mAcc', 'mDice', 'mFscore')
                if m in table['clean']['clean']]
        worst_names = ['worst'] + (['worst_miou'] if self.worst_miou else [])

        def radius(row_name):
            return row_name if row_name == 'clean' else \
                row_name.replace('eps', '') + '/255'

        def cells(src):
            return [f'{src[m]:.2f}' for m in cols]

        tables = []
        if self.table == 'wide':
            t = PrettyTable()
            t.field_names = ['radius'] + [
                f'{name} {m}' for name in worst_names + attacks for m in cols
            ]
            for row_name, row in table.items():
                line = [radius(row_name)]
                for name in worst_names + attacks:
                    line += cells(row.get(name, row.get('clean')))
                t.add_row(line)
            tables.append(t.get_string())
        elif self.table == 'per_radius':
            for row_name, row in table.items():
                t = PrettyTable()
                t.title = radius(row_name)
                t.field_names = ['output'] + cols
                for name, src in row.items():
                    t.add_row([name] + cells(src))
                tables.append(t.get_string())
        else:
            t = PrettyTable()
            t.field_names = ['radius'] + [f'worst {m}' for m in cols] + (
                ['worst_miou mIoU'] if self.worst_miou else [])
            a = PrettyTable()
            a.field_names = ['radius'] + [f'{n} aAcc / mIoU'
                                          for n in attacks]
            for row_name, row in table.items():
                src = row.get('worst', row.get('clean'))
                line = [radius(row_name)] + cells(src)
                if self.worst_miou:
                    line.append(f'{row.get("worst_miou", src)["mIoU"]:.2f}')
                t.add_row(line)
                if row_name != 'clean':
                    a.add_row([radius(row_name)] + [
                        f'{row[n]["aAcc"]:.2f} / {row[n]["mIoU"]:.2f}'
                        for n in attacks
                    ])
            tables.append(t.get_string())
            if attacks:
                tables.append('per attack:\n' + a.get_string())
        text = '\n'.join(tables)
        self.last_tables['summary'] = text
        print_log(self._title() + ':\n' + text, logger=logger)
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
