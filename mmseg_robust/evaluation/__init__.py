"""SEA evaluation: per-image records on disk, the SEAMetric and its
tables, SEA-2024's class weights."""
from .metrics import SEAMetric, sea_tables
from .records import RecordWriter, eps_key, image_areas, read_records
from .result_store import ResultStore, file_sha256

__all__ = [
    'SEAMetric', 'sea_tables', 'RecordWriter', 'image_areas', 'eps_key',
    'read_records', 'ResultStore', 'file_sha256'
]
