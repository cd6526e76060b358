"""tsmoe: Ray-based hyperparameter sweeps for Time-MoE anomaly detectors."""

__version__ = "0.1.0"
