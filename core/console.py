"""Printing from a command that may run as several processes (``torchrun``)."""
from __future__ import annotations

from .device import is_main_process


def echo(*parts, **kwargs) -> None:
    """``print`` (flushed) on rank 0 only, so a ``torchrun`` run prints each line once."""
    if is_main_process():
        print(*parts, flush=True, **kwargs)
