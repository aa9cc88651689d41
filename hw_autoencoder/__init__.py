"""Autoencoders on faces and (conditional) VAEs on digits; ``load_model(run)`` reads a trained run."""
from .models import load_model

__all__ = ["load_model"]
