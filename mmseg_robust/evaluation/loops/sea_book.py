"""The per-image records of an :class:`SEATestLoop` run on one rank: the
earlier ones read back on resume, each batch's new ones written to
``rank<r>.jsonl``, handed to the evaluator (with the protocol and norm the
metric's tables name) and counted for the progress line."""
from typing import Callable, Dict, Iterable, List, Optional

from mmengine.dist import barrier, get_dist_info

from mmseg_robust.evaluation.dist_guard import fail_together
from mmseg_robust.evaluation.result_store import ResultStore
from .sea_report import SEAProgress

__all__ = ['SEARecordBook']


class SEARecordBook:
    """This rank's records of one evaluation.

    Args:
        results_dir (str): Where the records go.
        evaluator (Evaluator): Gets the records, as data samples
            ``dict(sea_record=..., sea_protocol=..., sea_norm=...)``.
        protocol (str): The protocol the metric's tables name.
        norm (str): The threat model of the radii.
        eps_keys (list[str]): The radii as records key them.
    """

    def __init__(self, results_dir: str, evaluator, protocol: str, norm: str,
                 eps_keys: List[str]) -> None:
        self.results_dir = results_dir
        self.evaluator = evaluator
        self.protocol = protocol
        self.norm = norm
        self.eps_keys = list(eps_keys)
        #: the records by dataset index: earlier ones and this run's
        self.done: Dict[int, dict] = {}
        self.store: Optional[ResultStore] = None
        self.progress: Optional[SEAProgress] = None

    def open(self, settings: Callable[[], dict], resume: bool, n_images: int,
             n_batches: int) -> None:
        """Open this rank's file with the run's ``settings()`` (on every
        rank; with ``resume`` the earlier records of every rank are read
        back and enter the metric once, on rank 0, which deduplicates by
        dataset index anyway)."""
        rank, world_size = get_dist_info()
        with fail_together('opening the results'):
            self.store = ResultStore(self.results_dir, rank, settings())
            self.done = self.store.open(resume)
        barrier()
        self.progress = SEAProgress(self.eps_keys, n_images, n_batches,
                                    world_size, self.norm)
        if rank == 0 and self.done:
            self._process(self.done.values(), None)
            self.progress.add(self.done.values(), new=False)

    def add(self, records: List[dict], data_batch: dict) -> None:
        """A batch's new records: kept, counted, written and processed."""
        for rec in records:
            self.done[rec['idx']] = rec
        self.progress.add(records)
        self.store.write(records)
        self._process(records, data_batch)

    def _process(self, records: Iterable[dict],
                 data_batch: Optional[dict]) -> None:
        self.evaluator.process(
            data_samples=[
                dict(
                    sea_record=r,
                    sea_protocol=self.protocol,
                    sea_norm=self.norm) for r in records
            ],
            data_batch=data_batch)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
