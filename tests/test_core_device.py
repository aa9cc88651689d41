"""Device choice, precision mapping, seeding and RNG capture."""
import random

import numpy as np
import pytest
import torch

from core import device as dev


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.pick_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dev.pick_device("auto") == torch.device("cuda", 1)


def test_explicit_unavailable_device_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--device cuda: CUDA is not available"):
        dev.pick_device("cuda")
    assert dev.pick_device("cpu") == torch.device("cpu")


def test_precision_mapping(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert dev.autocast_dtype("auto", cpu) is None
    assert dev.autocast_dtype("32", cuda) is None
    assert dev.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert dev.autocast_dtype("16", cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert dev.autocast_dtype("auto", cuda) is torch.float16
    with pytest.raises(ValueError, match="--precision '8'"):
        dev.autocast_dtype("8", cpu)


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_and_rng_state_round_trip():
    dev.seed_everything(5)
    first = draws()
    dev.seed_everything(5)
    assert draws() == first
    state = dev.rng_state()
    after = draws()
    dev.set_rng_state(state)
    assert draws() == after
    dev.seed_everything(6)
    assert draws() != first


def test_single_process_is_main():
    info = dev.dist_info()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)


def test_deterministic_flag_is_set_both_ways():
    dev.seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    dev.seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_native_bf16_reads_the_cpus_flags(tmp_path):
    from core.device import native_bf16

    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {}\n\nprocessor\t: 1\n"
    cases = {"amx_bf16": True, "avx512_bf16": True, "avx512_vnni": False}
    for flag, expected in cases.items():
        (tmp_path / "cpuinfo").write_text(x86.format(flag))
        assert native_bf16(tmp_path / "cpuinfo") is expected, flag
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert native_bf16(tmp_path / "cpuinfo") is True                 # an Arm core with FEAT_BF16
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert native_bf16(tmp_path / "cpuinfo") is False
    assert native_bf16(tmp_path / "missing") is False
