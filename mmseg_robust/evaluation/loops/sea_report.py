"""What an SEA evaluation reports besides its metrics: progress lines while
it runs, and ``summary.json`` plus the robustness curves (by attack, and by
object size) at the end."""
import json
import math
import os.path as osp
import platform
import time
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

from mmengine.logging import print_log

from mmseg_robust.evaluation.metrics import sea_tables
from mmseg_robust.evaluation.records import RADIUS_AXIS, radius_label

__all__ = [
    'SEAProgress', 'write_summary', 'fmt_time', 'curve_title',
    'write_run_summary'
]


def fmt_time(seconds: float) -> str:
    """``h:mm:ss`` (``?`` if unknown)."""
    if not math.isfinite(seconds):
        return '?'
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class SEAProgress:
    """Running clean and worst-case pixel accuracy per radius, and the
    progress line the loop logs.

    Args:
        radii (Sequence[str]): Radius keys (``'4'``, ...).
        n_images (int): Images of the dataset.
        n_batches (int): Batches of this rank.
        world_size (int): Processes.
        norm (str): Threat model of the radii (``'linf'``, ``'l2'``).
    """

    def __init__(self,
                 radii: Sequence[str],
                 n_images: int,
                 n_batches: int,
                 world_size: int = 1,
                 norm: str = 'linf'):
        self.radii = list(radii)
        self.norm = norm
        self.n_images = n_images
        self.n_batches = n_batches
        self.world_size = world_size
        self.stats: Dict[str, List[int]] = {}
        self.n_seen = 0
        self.n_new = 0
        self.start = time.perf_counter()

    def add(self, records: Iterable[dict], new: bool = True) -> None:
        """Count records (``new=False``: earlier ones, on resume)."""
        for rec in records:
            stats = self.stats.setdefault('clean', [0, 0])
            stats[0] += rec['clean']['correct']
            stats[1] += rec['valid']
            for ek, entry in rec['eps'].items():
                s = self.stats.setdefault(ek, [0, 0])
                s[0] += entry['worst']['correct']
                s[1] += rec['valid']
            self.n_seen += 1
            self.n_new += int(new)

    def _acc(self, key: str) -> str:
        c, v = self.stats.get(key, (0, 0))
        return f'{100 * c / v:.1f}' if v else '-'

    def line(self, batch_idx: int) -> str:
        """The progress line after batch ``batch_idx``."""
        # each rank sees its shard: estimate the global count
        done = min(self.n_seen * self.world_size, self.n_images)
        elapsed = time.perf_counter() - self.start
        per_batch = elapsed / max(batch_idx + 1, 1)
        eta = per_batch * (self.n_batches - batch_idx - 1) \
            if self.n_new else float('nan')
        robust = ', '.join(f'{radius_label(k, self.norm)}: {self._acc(k)}'
                           for k in self.radii)
        return (f'SEA [{batch_idx + 1}/{self.n_batches}] images {done}/'
                f'{self.n_images}, elapsed {fmt_time(elapsed)}, ETA '
                f'{fmt_time(eta)} | aAcc clean {self._acc("clean")}, worst '
                f'{robust}' + (' (this rank)' if self.world_size > 1 else ''))

    def log(self, batch_idx: int) -> None:
        print_log(self.line(batch_idx), logger='current')

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def write_summary(results_dir: str,
                  metrics: dict,
                  protocol: str,
                  settings: dict,
                  checkpoint: Optional[str],
                  n_images: int,
                  world_size: int,
                  elapsed: float,
                  records: Iterable[dict],
                  device: str,
                  tables: Dict[str, str],
                  curve_title: str,
                  precision: Optional[dict] = None,
                  xlabel: str = 'eps (x 1/255)',
                  trust: Optional[dict] = None) -> str:
    """Write ``summary.json``, ``robustness_curve.png`` and, if the
    metrics hold accuracy by object size, ``robustness_by_size.png``
    (``xlabel``: their radius axis); returns the summary's path.
    ``trust``: the trust report
    (:meth:`~mmseg_robust.attacks.TrustReport.to_dict`), ``None`` without
    checks."""
    import mmcv
    import mmengine
    import mmseg
    import torch

    import mmseg_robust
    times = [r['time'] for r in records if 'time' in r]
    summary = OrderedDict(
        metrics=metrics,
        protocol=protocol,
        settings=settings,
        checkpoint=checkpoint,
        n_images=n_images,
        world_size=world_size,
        timing=dict(
            wall_seconds_this_run=elapsed,
            attack_seconds_per_image=(sum(times) /
                                      len(times) if times else None)),
        versions=dict(
            mmseg_robust=mmseg_robust.__version__,
            torch=torch.__version__,
            mmseg=mmseg.__version__,
            mmengine=mmengine.__version__,
            mmcv=mmcv.__version__,
            python=platform.python_version()),
        device=device,
        precision=precision,
        tables=tables,
        trust=trust)
    path = osp.join(results_dir, 'summary.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, default=float)
    curve = osp.join(results_dir, 'robustness_curve.png')
    by_size = osp.join(results_dir, 'robustness_by_size.png')
    try:
        from mmseg_robust.visualization import (has_size_metrics,
                                                plot_robustness_by_size,
                                                plot_robustness_curve)
        plot_robustness_curve(metrics, curve, title=curve_title, xlabel=xlabel)
        if has_size_metrics(metrics):
            plot_robustness_by_size({None: metrics},
                                    by_size,
                                    curve_title,
                                    xlabel=xlabel)
        else:
            by_size = None
    except ImportError as err:  # matplotlib missing
        print_log(f'no robustness curve: {err}', logger='current', level=30)
        curve = by_size = None
    print_log(
        f'SEA results: {path}' + (f', curve: {curve}' if curve else '') +
        (f', by object size: {by_size}' if by_size else ''),
        logger='current')
    return path


def curve_title(cfg, experiment_name: str) -> str:
    """The curves' title: the config's name (else the experiment's) and
    the checkpoint's file name."""
    path = getattr(cfg, 'filename', None)
    name = osp.splitext(osp.basename(path))[0] if path else \
        str(experiment_name)
    ckpt = cfg.get('load_from')
    return f'{name} ({osp.basename(ckpt)})' if ckpt else name


def write_run_summary(results_dir: str, metrics: dict, metric, options,
                      settings: dict, cfg, experiment_name: str, n_images: int,
                      world_size: int, book, device: str) -> str:
    """:func:`write_summary` of an :class:`SEATestLoop` run: the tables and
    trust report of its ``metric`` (:class:`SEAMetric`), the protocol,
    precision and radius axis of its ``options``
    (:class:`~.sea_options.SEAOptions`), the records and time of its
    ``book`` (:class:`~.sea_book.SEARecordBook`)."""
    protocol = options.sea.describe()
    tables = sea_tables(metrics, metric.table, protocol, norm=options.norm)
    report = metric.trust_report
    return write_summary(
        results_dir,
        metrics,
        protocol,
        settings,
        cfg.get('load_from'),
        n_images,
        world_size,
        book.progress.elapsed,
        book.done.values(),
        device, {
            k: v
            for k, v in tables.items() if k != 'title'
        },
        curve_title(cfg, experiment_name),
        dict(
            options.precision(device),
            channels_last=options.channels_last,
            compile=options.compile),
        trust=None if report is None else report.to_dict(),
        xlabel=RADIUS_AXIS[options.norm])
