"""core.optim: the AdamW + one-cycle recipe the tasks share."""
from __future__ import annotations

import pytest
import torch

from core.optim import adamw_one_cycle


def test_one_cycle_warms_up_to_the_peak_then_decays_to_almost_zero():
    params = [torch.nn.Parameter(torch.zeros(2))]
    config = adamw_one_cycle(params, lr=0.01, total_steps=20, weight_decay=0.0, pct_start=0.25)
    optimizer, scheduler = config["optimizer"], config["scheduler"]
    assert config["interval"] == "step" and isinstance(optimizer, torch.optim.AdamW)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.01 / 25)                  # OneCycleLR's default div_factor
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 4   # the peak after 25% of 20 steps
    assert lrs[-1] < 1e-4


def test_without_steps_it_is_plain_adamw():
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = adamw_one_cycle(params, lr=0.003, total_steps=None, weight_decay=0.01)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 0.003 and optimizer.param_groups[0]["weight_decay"] == 0.01
