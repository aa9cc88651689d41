"""HW8: hard-hat detection with CenterNet, natively in PyTorch and through MMDetection."""
from .models import load_model  # noqa: F401  (core.runs.load_model finds it here)
