"""medablate: honest, fast ablation studies of deep-learning classifiers on medical images."""

__version__ = "0.1.0"
