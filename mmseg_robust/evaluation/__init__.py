"""SEA evaluation: per-image records and the SEAMetric."""
from .metrics import SEAMetric
from .records import RecordWriter, areas, eps_key, read_records

__all__ = ['SEAMetric', 'RecordWriter', 'areas', 'eps_key', 'read_records']
