# AT^2 (docs/training.md): every training batch is replaced by 2-step l_inf PGD
# adversarial images at eps = 4/255 (step size 2.5 * eps / 2, no random
# start, CE over valid pixels, attack in eval mode).
custom_hooks = [dict(type='AdvTrainingHook', eps=4 / 255, steps=2)]
