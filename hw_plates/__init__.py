"""Licence plates: find each plate in a photo, then read it with a CRNN trained by CTC."""
from .models import load_model  # noqa: F401  (core.runs.load_model finds it here)
