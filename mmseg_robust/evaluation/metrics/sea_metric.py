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

from mmseg_robust.attacks.trust import TrustReport
from mmseg_robust.errors import ConfigError
from ..dist_guard import run_on_main
from ..object_sizes import REFERENCE_SIZE, SIZE_BUCKETS, SIZE_EDGES
from ..records import radius_label
from .sea_summary import (output_summary, size_totals, sorted_eps,
                          worst_miou_choice)

__all__ = [
    'SEAMetric', 'sea_tables', 'size_bucket_text', 'trust_from_records',
    'log_trust'
]


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
    smaller radius's ``worst_miou``; see :func:`~mmseg_robust.metrics_core.
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
    but those of the buckets. The computations are in :mod:`.sea_summary`.

    The records hold each image's areas, computed by the loop. The loop
    passes each record as ``dict(sea_record=..., sea_protocol=...,
    sea_norm=...)``: the protocol (SEA version, iterations, tracked
    objectives) named in the table title and the threat model of the
    radii come with the data (:attr:`protocol` and :attr:`norm` hold the
    last ones seen; without them, the title names no protocol and radii
    are l_inf).

    Args:
        per_class (bool): Also report per-class IoU, clean and of the worst
            case (``clean/IoU/<class>``, ``eps4/worst/IoU/<class>``).
        worst_miou (bool): Compute the worst case by mIoU.
        table (str): ``'compact'`` (a worst-case table and an attack table,
            one cell per attack), ``'per_radius'`` (one table per radius,
            a row per attack) or ``'wide'`` (one table, a column per attack
            and metric).
        prefix (str): Key prefix (default ``'sea'``).
        ignore_index (int, optional): The ignored label. Set, it is the
            label :class:`SEATestLoop` ignores in its attacks, label checks
            and areas (a loop given another ``ignore_index`` refuses to
            start, with a :class:`~mmseg_robust.errors.ConfigError`);
            ``None`` (default): the loop's (its argument, else the decode
            head's).
        **kwargs: Passed to :class:`IoUMetric` (``iou_metrics``,
            ``nan_to_num``, ``collect_device``...).
    """

    default_prefix = 'sea'
    TABLES = ('compact', 'per_radius', 'wide')

    def __init__(self,
                 per_class: bool = False,
                 worst_miou: bool = True,
                 table: str = 'compact',
                 prefix: Optional[str] = None,
                 ignore_index: Optional[int] = None,
                 **kwargs) -> None:
        kwargs.setdefault('iou_metrics', ['mIoU'])
        super().__init__(prefix=prefix, **kwargs)
        if table not in self.TABLES:
            raise ConfigError(f'table={table!r}: use one of {self.TABLES}')
        self.ignore_index: Optional[int] = None if ignore_index is None \
            else int(ignore_index)
        self.per_class = per_class
        self.worst_miou = worst_miou
        self.table = table
        #: the protocol named in the table title and the threat model of
        #: the radii, as the processed data samples give them
        self.protocol: Optional[str] = None
        self.norm = 'linf'
        #: the trust report over the dataset, from the records' ``trust``
        #: measurements (``None`` without them), set by compute_metrics
        self.trust_report: Optional[TrustReport] = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Collect the per-image records the SEA test loop attaches (and
        the protocol and norm that come with them)."""
        for sample in data_samples:
            record = sample.get('sea_record') if isinstance(sample,
                                                            dict) else None
            if record is None:
                raise ConfigError(
                    'SEAMetric expects records from SEATestLoop (data '
                    "samples with 'sea_record'); use test_cfg=dict(type="
                    "'SEATestLoop', ...) or tools/test.py --eval sea")
            self.protocol = sample.get('sea_protocol', self.protocol)
            self.norm = sample.get('sea_norm', self.norm)
            self.results.append(record)

    def evaluate(self, size: int) -> dict:
        """Gather records from all ranks (deduplicated by dataset index, so
        sampler padding and resumed images count once) and compute on rank
        0. If computing raises, every rank raises the same error
        (:func:`~mmseg_robust.evaluation.dist_guard.run_on_main`)."""
        gathered = all_gather_object(
            dict(records=self.results, protocol=self.protocol, norm=self.norm))
        metrics = run_on_main(self._compute_gathered, gathered)
        self.results.clear()
        return metrics

    def _compute_gathered(self, gathered: List[dict]) -> dict:
        """The prefixed metrics of every rank's records (on rank 0)."""
        unique = OrderedDict()
        for part in gathered:
            if part['protocol'] is not None:  # a rank that saw the loop's
                self.protocol, self.norm = part['protocol'], part['norm']
            for rec in part['records']:
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

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Metrics from the list of per-image records (and, with
        ``per_class``, per-class IoU as ``clean/IoU/<class>`` and
        ``eps4/worst/IoU/<class>``); logs their tables."""
        classes = list(self.dataset_meta['classes'])
        num_classes = len(classes)
        metrics: Dict[str, float] = OrderedDict()
        if not results:
            return metrics
        eps_keys = sorted_eps(results[0]['eps'])
        attacks = [k for k in results[0]['eps'][eps_keys[0]]
                   if k != 'worst'] if eps_keys else []

        def add(row: str, select, per_class: bool) -> None:
            summ = output_summary(results, select, num_classes,
                                  lambda r: select(r)['correct'], self.metrics,
                                  self.nan_to_num, self.beta, sizes)
            iou = summ.pop('_IoU')
            for k, v in summ.items():
                metrics[f'{row}/{k}'] = v
            if per_class and self.per_class:
                for name, v in zip(classes, np.asarray(iou)):
                    metrics[f'{row}/IoU/{name}'] = float(np.round(v * 100, 2))

        totals = size_totals(results)
        sizes = totals is not None
        add('clean', lambda r: r['clean'], True)
        selected = worst_miou_choice(
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
                add(f'eps{e}/{name}', select, name == 'worst')
        metrics['n_images'] = len(results)
        metrics['n_no_valid'] = sum(1 for r in results if r['valid'] == 0)
        metrics.update(totals or {})
        self._log_tables(metrics, results)
        return metrics

    def _log_tables(self, metrics: Dict[str, float],
                    results: List[dict]) -> None:
        """Log the tables and the trust report (kept as
        :attr:`trust_report`)."""
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
