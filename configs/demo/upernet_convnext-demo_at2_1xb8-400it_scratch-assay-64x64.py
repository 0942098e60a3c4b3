# Demo model with adversarial training: 2 steps of PGD at eps 4/255 on
# every batch (the paper's AT^2 recipe), otherwise identical to the clean
# demo config. This is all it takes to make an MMSeg config adversarial.
_base_ = ['./_base_demo.py']
custom_hooks = [dict(type='AdvTrainingHook', eps=4 / 255, steps=2)]
