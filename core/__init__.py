"""The shared engine of the course homeworks: one Trainer, callbacks, losses, metrics, data
resolution, plots and Kaggle submissions. Nothing in ``core`` knows about any homework."""

__version__ = "0.1.0"
