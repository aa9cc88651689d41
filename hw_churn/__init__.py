"""HW3: churn prediction on tabular data (logistic regression, CatBoost and their blend).

``hw_churn.load_model(run)`` gives the final model of a ``hw_churn.train`` run (see
:func:`hw_churn.models.load_model`).
"""
from .models import load_model

__all__ = ["load_model"]
