"""HW5: semantic segmentation of skin lesions (PH2) with SegNet, UNet and UNet2 and several losses.

``load_model(run)`` rebuilds a trained run's network from its ``model.pt`` (see
:func:`hw_segment.models.load_model`)."""
from .models import load_model

__all__ = ["load_model"]
