from .adv_training_hook import AdvTrainingHook

__all__ = ['AdvTrainingHook']
