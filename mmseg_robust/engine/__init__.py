"""Engine parts: the adversarial-training hook and the SEA test loop."""
from .hooks import AdvTrainingHook
from .runner import DEFAULT_EPS, SEATestLoop

__all__ = ['AdvTrainingHook', 'SEATestLoop', 'DEFAULT_EPS']
