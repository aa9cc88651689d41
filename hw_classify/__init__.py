"""HW4: image classification (the Simpsons), transfer learning, car models and architecture studies.

``load_model(run)`` rebuilds a trained run's classifier from its ``model.pt`` (see
:func:`hw_classify.models.load_model`)."""
from .models import load_model

__all__ = ["load_model"]
