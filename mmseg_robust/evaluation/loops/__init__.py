from .sea_test_loop import DEFAULT_EPS, SEATestLoop

__all__ = ['SEATestLoop', 'DEFAULT_EPS']
