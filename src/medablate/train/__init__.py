"""Fitting one trial: the Trainer's loop, its checkpoint policy, augmentation, optimizers and schedulers, the
loss's rule (tasks) and TensorBoard logging.
"""
