"""Engine parts: the adversarial-training hook and the SEA test loop."""
from .hooks import AdvTrainingHook

__all__ = ['AdvTrainingHook']
