"""SEAMetric: clean and robust aAcc / mIoU / mAcc per radius and attack."""
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.dist import all_gather_object
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable

from mmseg_robust.attacks import worst_case_miou
from mmseg_robust.attacks.trust import TrustReport
from mmseg_robust.errors import ConfigError
from ..dist_guard import run_on_main
from ..object_sizes import REFERENCE_SIZE, SIZE_BUCKETS, SIZE_EDGES
from ..records import dense_areas, image_miou, radius_label, sum_areas

__all__ = [
    'SEAMetric', 'sea_tables', 'size_bucket_text', 'trust_from_records',
    'log_trust'
]


def _sorted_eps(keys):
    return sorted(keys, key=float)


@METRICS.register_module()
class SEAMetric(IoUMetric):
    """Robust segmentation metrics from :class:`SEATestLoop` records.

    Same definitions as MMSeg's :class:`IoUMetric` (docs/evaluation.md):
    ``aAcc``
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
    accuracies over images with valid pixels, ``mImgIoU``, the mean of
    per-image mIoU over the classes present in each image's label
    (:func:`~mmseg_robust.evaluation.records.image_miou`), ``aAcc_small``,
    ``aAcc_medium``, ``aAcc_large``, the fraction of the pixels of small,
    medium and large ground-truth objects predicted correctly
    (:mod:`~mmseg_robust.evaluation.object_sizes`; a bucket without pixels
    has no key), and ``sea/n_images``, ``sea/n_no_valid``,
    ``sea/n_px_<bucket>``, ``sea/n_objects_<bucket>``) and logs tables like
    the paper's (:func:`sea_tables`, which makes them from the metrics).
    Records of earlier versions, without object sizes, give every metric
    but those of the buckets. The records
    hold each image's areas, computed by the loop with its
    ``ignore_index``; this metric's own ``ignore_index`` is not used.

    Args:
        per_class (bool): Also report per-class IoU, clean and of the worst
            case (``clean/IoU/<class>``, ``eps4/worst/IoU/<class>``).
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
        #: tracked objectives) named in the table title, and the threat
        #: model of the radii
        self.protocol: Optional[str] = None
        self.norm = 'linf'
        #: the trust report over the dataset, from the records' ``trust``
        #: measurements (``None`` without them), set by compute_metrics
        self.trust_report: Optional[TrustReport] = None

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
        sampler padding and resumed images count once) and compute on rank
        0. If computing raises, every rank raises the same error
        (:func:`~mmseg_robust.evaluation.dist_guard.run_on_main`)."""
        gathered = all_gather_object(self.results)
        metrics = run_on_main(self._compute_gathered, gathered)
        self.results.clear()
        return metrics

    def _compute_gathered(self, gathered: List[list]) -> dict:
        """The prefixed metrics of every rank's records (on rank 0)."""
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
        return metrics

    # -- computation -------------------------------------------------------
    def _summary(self,
                 records: List[dict],
                 select,
                 num_classes: int,
                 correct_of,
                 sizes: bool = False) -> Dict[str, float]:
        """One output's metrics (``select(record)``: its areas);
        ``sizes``: also the accuracy per object-size bucket."""
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
        img_iou = [image_miou(select(r)) for r in records if r['valid'] > 0]
        out['mImgIoU'] = float(np.round(np.mean(img_iou) * 100, 2)) \
            if img_iou else float('nan')
        if sizes:
            correct = np.zeros(len(SIZE_BUCKETS), np.int64)
            valid = np.zeros(len(SIZE_BUCKETS), np.int64)
            for r in records:
                correct += select(r)['size_correct']
                valid += r['size']['valid']
            for name, c, v in zip(SIZE_BUCKETS, correct, valid):
                if v > 0:  # no key for a bucket without pixels (no NaN)
                    out[f'aAcc_{name}'] = float(np.round(100 * c / v, 2))
        out['_IoU'] = ret.get('IoU')
        return out

    @staticmethod
    def _size_totals(results: List[dict]) -> Optional[Dict[str, int]]:
        """``n_px_<bucket>`` and ``n_objects_<bucket>`` over the dataset;
        ``None`` (and a warning) if some records lack size buckets
        (written by a version without them)."""
        old = sum(1 for r in results if 'size' not in r)
        if old:
            print_log(
                f'{old} of {len(results)} per-image records have no '
                'object-size buckets (written by an earlier version): '
                'accuracy by object size is left out; evaluate again '
                'without --resume for it',
                logger='current',
                level=30)
            return None
        out: Dict[str, int] = OrderedDict()
        for key in ('px', 'objects'):
            field = 'valid' if key == 'px' else 'objects'
            totals = np.sum([r['size'][field] for r in results], axis=0)
            for name, n in zip(SIZE_BUCKETS, totals):
                out[f'n_{key}_{name}'] = int(n)
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
            found = worst_case_miou(
                inter, union, starts=starts, uniform_starts=False)
            prev = found['choice']
            out[e] = [cands[c] for c in prev]
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Metrics from the list of per-image records (and, with
        ``per_class``, per-class IoU as ``clean/IoU/<class>`` and
        ``eps4/worst/IoU/<class>``); logs their tables."""
        classes = list(self.dataset_meta['classes'])
        num_classes = len(classes)
        metrics: Dict[str, float] = OrderedDict()
        if not results:
            return metrics
        eps_keys = _sorted_eps(results[0]['eps'])
        attacks = [k for k in results[0]['eps'][eps_keys[0]]
                   if k != 'worst'] if eps_keys else []

        def add(row: str, summ: dict, per_class: bool) -> None:
            iou = summ.pop('_IoU')
            for k, v in summ.items():
                metrics[f'{row}/{k}'] = v
            if per_class and self.per_class:
                for name, v in zip(classes, np.asarray(iou)):
                    metrics[f'{row}/IoU/{name}'] = float(np.round(v * 100, 2))

        size_totals = self._size_totals(results)
        sizes = size_totals is not None
        add(
            'clean',
            self._summary(results, lambda r: r['clean'], num_classes,
                          lambda r: r['clean']['correct'], sizes), True)
        selected = self._worst_miou(
            results, eps_keys, ['worst'] +
            attacks, num_classes) if (self.worst_miou and eps_keys) else {}
        for e in eps_keys:
            sources = [(name, lambda r, e=e, n=name: r['eps'][e][n])
                       for name in ['worst'] + attacks]
            if e in selected:
                choice = {r['idx']: c for r, c in zip(results, selected[e])}
                sources.insert(1, ('worst_miou', lambda r, c=choice: r['eps'][
                    c[r['idx']][0]][c[r['idx']][1]]))
            for name, select in sources:
                add(
                    f'eps{e}/{name}',
                    self._summary(
                        results,
                        select,
                        num_classes,
                        lambda r, s=select: s(r)['correct'],
                        sizes), name == 'worst')
        metrics['n_images'] = len(results)
        metrics['n_no_valid'] = sum(1 for r in results if r['valid'] == 0)
        metrics.update(size_totals or {})
        tables = sea_tables(
            metrics, self.table, self.protocol, prefix='', norm=self.norm)
        logger = MMLogger.get_current_instance()
        print_log(tables['title'] + ':\n' + tables['summary'], logger=logger)
        if 'size' in tables:
            print_log(tables['size'], logger=logger)
        if 'per_class' in tables:
            print_log(
                'per-class IoU, clean and worst case:\n' + tables['per_class'],
                logger=logger)
        self.trust_report = trust_from_records(results)
        if self.trust_report is not None:
            log_trust(self.trust_report, logger)
        return metrics


def trust_from_records(records: List[dict]) -> Optional[TrustReport]:
    """The trust report over the records that hold trust measurements
    (``None`` if none does): the checks summarised over every image, the
    cost summed, and ``n_unchecked``, the records without measurements
    (``--checks none``, or resumed from an earlier version)."""
    images = [r['trust'] for r in records if r.get('trust')]
    if not images:
        return None
    levels = sorted({m.get('level') for m in images})
    radii = sorted({m.get('eps') for m in images}, key=float)
    cost: Dict[str, float] = OrderedDict()
    for m in images:
        for k, v in m.get('cost', {}).items():
            cost[k] = cost.get(k, 0) + v
    cost['n_images'] = len(images)
    cost['n_unchecked'] = len(records) - len(images)
    # radii are keyed in units of 1/255 (l_inf) or as they are (l2)
    norm = images[0].get('norm', 'linf')
    eps = float(radii[-1]) / (255 if norm == 'linf' else 1)
    return TrustReport.from_images(
        images,
        eps,
        levels[0] if len(levels) == 1 else 'mixed',
        cost,
        norm=norm)


def log_trust(report: TrustReport, logger=None) -> None:
    """The report's table, then one warning line per flagged check."""
    text = report.format()
    missing = report.cost.get('n_unchecked', 0)
    if missing:
        text += (f'\n  {missing} image(s) have no trust measurements '
                 '(evaluated with --checks none or by an earlier version)')
    print_log(text, logger=logger)
    for c in report.warnings:
        print_log(
            f'trust check {c.name!r} warns: {c.message}',
            logger=logger,
            level=logging.WARNING)


def _radius(row: str, norm: str = 'linf') -> str:
    return row if row == 'clean' else radius_label(
        row.replace('eps', ''), norm)


def sea_tables(metrics: Dict[str, float],
               layout: str = 'compact',
               protocol: Optional[str] = None,
               prefix: str = 'sea',
               norm: str = 'linf') -> Dict[str, str]:
    """The tables of an SEA evaluation, made from its metrics.

    Args:
        metrics (dict): :class:`SEAMetric`'s metrics.
        layout (str): ``'compact'`` (a worst-case table and an attack
            table), ``'per_radius'`` (one table per radius, a row per
            output) or ``'wide'`` (one table, a column per output and
            metric).
        protocol (str, optional): The protocol named in the title.
        prefix (str): The metrics' key prefix.
        norm (str): Threat model of the radii (``'linf'``: in units of
            1/255; ``'l2'``).

    Returns:
        dict: ``title``, ``summary`` (the tables as text), if the metrics
        hold per-class IoU, ``per_class``, and if they hold per-image mIoU
        (or accuracy by object size), ``size``: the worst case's pooled
        and per-image mIoU and its accuracy by object size, a row per
        radius, with a heading saying what the columns are.
    """
    head = f'{prefix}/' if prefix else ''
    rows: Dict[str, Dict[str, Dict[str, float]]] = OrderedDict()
    per_class: Dict[str, Dict[str, float]] = OrderedDict()
    for key, value in metrics.items():
        if not key.startswith(head) or key[len(head):].startswith('n_'):
            continue
        parts = key[len(head):].split('/')
        if 'IoU' in parts[:-1]:  # <row>[/<output>]/IoU/<class>
            row = parts[0]
            per_class.setdefault(row, OrderedDict())[parts[-1]] = value
            continue
        row, name = parts[0], ('clean' if parts[0] == 'clean' else parts[1])
        rows.setdefault(row, OrderedDict()).setdefault(
            name, OrderedDict())[parts[-1]] = value
    cols = [
        m for m in ('aAcc', 'mIoU', 'mAcc', 'mDice', 'mFscore')
        if m in rows.get('clean', {}).get('clean', {})
    ]
    outputs = []
    for row in rows.values():
        outputs += [n for n in row if n not in outputs and n != 'clean']
    worst_names = [n for n in ('worst', 'worst_miou') if n in outputs]
    attacks = [n for n in outputs if n not in worst_names]

    def cells(src):
        return [f'{src[m]:.2f}' for m in cols]

    out = []
    if layout == 'wide':
        t = PrettyTable()
        t.field_names = ['radius'] + [
            f'{name} {m}' for name in worst_names + attacks for m in cols
        ]
        for row_name, row in rows.items():
            line = [_radius(row_name, norm)]
            for name in worst_names + attacks:
                line += cells(row.get(name, row.get('clean')))
            t.add_row(line)
        out.append(t.get_string())
    elif layout == 'per_radius':
        for row_name, row in rows.items():
            t = PrettyTable()
            t.title = _radius(row_name, norm)
            t.field_names = ['output'] + cols
            for name, src in row.items():
                t.add_row([name] + cells(src))
            out.append(t.get_string())
    else:
        t = PrettyTable()
        t.field_names = ['radius'] + [f'worst {m}' for m in cols] + (
            ['worst_miou mIoU'] if 'worst_miou' in worst_names else [])
        a = PrettyTable()
        a.field_names = ['radius'] + [f'{n} aAcc / mIoU' for n in attacks]
        for row_name, row in rows.items():
            src = row.get('worst', row.get('clean'))
            line = [_radius(row_name, norm)] + cells(src)
            if 'worst_miou' in worst_names:
                line.append(f'{row.get("worst_miou", src)["mIoU"]:.2f}')
            t.add_row(line)
            if row_name != 'clean':
                a.add_row([_radius(row_name, norm)] + [
                    f'{row[n]["aAcc"]:.2f} / {row[n]["mIoU"]:.2f}'
                    for n in attacks
                ])
        out.append(t.get_string())
        if attacks:
            out.append('per attack:\n' + a.get_string())
    title = (f'SEA robustness{f" [{protocol}]" if protocol else ""}. worst '
             '= per image the output with the lowest pixel accuracy' +
             ('; worst_miou = per-image choice minimising the dataset mIoU'
              if 'worst_miou' in worst_names else ''))
    tables = dict(title=title, summary='\n'.join(out))
    if per_class:
        c = PrettyTable()
        names = list(next(iter(per_class.values())))
        c.add_column('Class', names)
        for row_name, values in per_class.items():
            c.add_column(
                'clean IoU' if row_name == 'clean' else
                f'worst IoU {_radius(row_name, norm)}',
                [f'{values[n]:.2f}' for n in names])
        tables['per_class'] = c.get_string()
    size = _size_table(rows, metrics, head, norm)
    if size:
        tables['size'] = size
    return tables


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None or value != value else f'{value:.2f}'


def size_bucket_text() -> str:
    """What the object-size buckets are, in words."""
    ref = REFERENCE_SIZE[0] * REFERENCE_SIZE[1]
    small, medium = (100 * e * e / ref for e in SIZE_EDGES)
    return (f'objects: 8-connected regions of one ground-truth class;\n  '
            f'small < {small:.2f}%, medium < {medium:.2f}% of the image '
            f'area, large the rest\n  (COCO\'s {SIZE_EDGES[0]}^2 and '
            f'{SIZE_EDGES[1]}^2 px at {REFERENCE_SIZE[0]}x'
            f'{REFERENCE_SIZE[1]}, scaled to the image)')


def _size_table(rows: dict,
                metrics: Dict[str, float],
                head: str,
                norm: str = 'linf') -> Optional[str]:
    """The worst case's pooled and per-image mIoU and its pixel accuracy
    per object-size bucket, a row per radius (``None`` without them)."""
    outs = [row.get('worst', row.get('clean')) or {} for row in rows.values()]
    buckets = [b for b in SIZE_BUCKETS if any(f'aAcc_{b}' in o for o in outs)]
    if not buckets and not any('mImgIoU' in o for o in outs):
        return None
    t = PrettyTable()
    t.field_names = ['radius', 'mIoU', 'mIoU/img', 'aAcc'] + buckets
    for row_name, out in zip(rows, outs):
        t.add_row([_radius(row_name, norm)] + [
            _fmt(out.get(k)) for k in ['mIoU', 'mImgIoU', 'aAcc'] +
            [f'aAcc_{b}' for b in buckets]
        ])
    text = ('where models break (worst case): mIoU pooled over the dataset '
            'and per image\n  (mIoU/img: mean over images of the IoU of the '
            'classes in each label)')
    if buckets:
        counts = ', '.join(f'{b} {metrics.get(f"{head}n_objects_{b}", 0)} '
                           f'({metrics.get(f"{head}n_px_{b}", 0)} px)'
                           for b in SIZE_BUCKETS)
        text += (';\n  pixel accuracy of all pixels and of those in '
                 f'{", ".join(buckets)} objects;\n{size_bucket_text()};\n'
                 f'objects (pixels): {counts}')
    return text + ':\n' + t.get_string()
