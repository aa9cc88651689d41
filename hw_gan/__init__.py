"""A DCGAN on faces; ``load_model(run)`` reads a trained run's generator."""
from .models import load_model

__all__ = ["load_model"]
