from .sea_metric import SEAMetric

__all__ = ['SEAMetric']
