"""Part 1: gradient descent on ``f(x) = sin(x1)^2 + sin(x2)^2``."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def f(x: np.ndarray) -> np.ndarray:
    """``sum(sin(x)^2)`` over the first axis: a number for a vector, a grid for stacked grids."""
    return np.sum(np.sin(x) ** 2, axis=0)


def grad_f(x: np.ndarray) -> np.ndarray:
    """The analytic gradient: d/dx sin(x)^2 = 2 sin(x) cos(x) = sin(2x)."""
    return np.sin(2 * x)


def grad_descent_2d(f: Callable, grad_f: Callable, lr: float, num_iter: int = 100,
                    x0: np.ndarray | None = None) -> np.ndarray:
    """Plain gradient descent ``x <- x - lr * grad_f(x)`` from ``x0`` (default
    ``np.random.random(2)``, the global NumPy generator as in the course).

    Returns:
        ``(num_iter, 3)`` array, one row ``[x1, x2, f(x)]`` recorded before each update.
    """
    curr_x = np.random.random(2) if x0 is None else np.array(x0, dtype=float)
    history = []
    for _ in range(num_iter):
        history.append(np.hstack((curr_x, f(curr_x))))
        curr_x -= lr * grad_f(curr_x)
    return np.vstack(history)
