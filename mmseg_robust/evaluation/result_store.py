"""The per-image records of an SEA evaluation on disk: one JSON-lines file
per rank, its first line the settings; resuming reads them back, a fresh
run moves them aside (never overwritten). docs/evaluation.md, "Resuming"."""
import hashlib
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional

from mmengine.logging import print_log

from mmseg_robust.errors import ConfigError
from .records import RecordWriter, read_records

__all__ = ['ResultStore', 'file_sha256']


def file_sha256(path: Optional[str]) -> Optional[str]:
    """SHA-256 of a file (``None`` for no file): identifies a checkpoint by
    its content, not its path."""
    if not path or not osp.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    return h.hexdigest()


class ResultStore:
    """This rank's records file in ``results_dir`` and the earlier ones.

    Args:
        results_dir (str): The folder (``rank<r>.jsonl`` files).
        rank (int): This process's rank.
        settings (dict): Everything that changes the numbers; written as
            the first line and compared on resume.
    """

    def __init__(self, results_dir: str, rank: int, settings: dict):
        self.results_dir = results_dir
        self.rank = rank
        # as it reads back from JSON (tuples become lists...)
        self.header = json.loads(json.dumps(settings))
        self.path = osp.join(results_dir, f'rank{rank}.jsonl')
        self._writer: Optional[RecordWriter] = None

    def open(self, resume: bool) -> Dict[int, dict]:
        """Open this rank's file for appending.

        With ``resume`` the records of every rank's file are read (refused
        if made with other settings; unreadable lines are dropped, their
        images evaluated again) and returned by dataset index; otherwise
        an existing file is moved to ``rank<r>.jsonl.<time>.bak``.

        Returns:
            dict: Earlier records by dataset index (empty without resume).
        """
        done: Dict[int, dict] = {}
        keep: List[dict] = []
        if resume:
            names = sorted(
                f for f in (os.listdir(self.results_dir) if osp.
                            isdir(self.results_dir) else [])
                if f.startswith('rank') and f.endswith('.jsonl'))
            for name in names:
                path = osp.join(self.results_dir, name)
                old, records, bad = read_records(path)
                self._check_header(path, old)
                if bad:
                    print_log(
                        f'{path}: {bad} unreadable line(s) (interrupted '
                        'write?); those images are evaluated again',
                        logger='current',
                        level=30)
                for rec in records:
                    done.setdefault(rec['idx'], rec)
                if path == self.path:
                    keep = records
            if done:
                print_log(
                    f'SEA: resuming, {len(done)} image(s) already '
                    f'evaluated in {self.results_dir}',
                    logger='current')
        else:
            self._archive()
        self._writer = RecordWriter(self.path, self.header, keep)
        return done

    def _check_header(self, path: str, old: Optional[dict]) -> None:
        if old is None or old == self.header:
            return
        diff = {
            k: (old.get(k), self.header.get(k))
            for k in self.header if old.get(k) != self.header.get(k)
        }
        raise ConfigError(
            f'cannot resume from {path}: it was produced with other '
            f'settings (old, new): {diff}. Use the same settings, or '
            'another --work-dir to start afresh.')

    def _archive(self) -> None:
        """Never overwrite earlier results: move them aside."""
        if osp.exists(self.path):
            stamp = time.strftime('%Y%m%d_%H%M%S')
            backup = f'{self.path}.{stamp}.bak'
            os.replace(self.path, backup)
            print_log(
                f'SEA: moved earlier results {self.path} to {backup} '
                '(use --resume to continue them instead)',
                logger='current')

    def write(self, records: List[dict]) -> None:
        """Append records and flush them to disk."""
        self._writer.write(records)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
