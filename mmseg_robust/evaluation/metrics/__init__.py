from .sea_metric import SEAMetric, sea_tables

__all__ = ['SEAMetric', 'sea_tables']
