"""Sweeps: Ray Tune with Optuna over the trainer, two objectives, early stopping, results and export."""
