"""Devices, seeds, determinism, mixed precision and distributed (DDP) set-up.

Everything here is homework-agnostic: a homework asks for a device and a seed and gets the
same behaviour on a laptop CPU, an Apple GPU, one CUDA card or several under ``torchrun``.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import random
from pathlib import Path
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


def pick_device(preference: str = "auto") -> torch.device:
    """Return the device to train on: ``cuda`` if present, then ``mps``, then ``cpu``.

    Args:
        preference: ``"auto"`` for that order, or an explicit torch device string
            (``"cpu"``, ``"cuda:1"``, ``"mps"``). An explicit device that is not available
            raises ``RuntimeError`` instead of silently falling back.
    """
    if preference == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {preference}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"--device {preference}: MPS is not available on this machine")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices); optionally force deterministic kernels.

    ``deterministic=True`` makes cuDNN pick deterministic algorithms and asks PyTorch to
    warn about ops that have none, so two runs with the same seed give the same weights.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # set both ways, so a deterministic run earlier in the same process does not leak into this one
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def rng_state() -> dict:
    """Capture every random generator a training run draws from (for exact resume), as
    tensors and plain Python values, so a checkpoint holding it loads with
    ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (tensors may come back on any device)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        np.random.set_state((numpy_state["name"], numpy_state["keys"].cpu().numpy().astype(np.uint32),
                             numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    else:  # checkpoints written before the state was stored as plain values
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def process_age() -> float | None:
    """Seconds since this process started (from ``/proc`` on Linux), or ``None`` elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively: the x86 flags ``avx512_bf16`` or
    ``amx_bf16``, or the Arm feature ``bf16``, in ``cpuinfo``. Without them PyTorch emulates
    bf16 matrix products, which are then no faster than fp32. False when the file is missing."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    words = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words.update(value.split())
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_where_native(precision: str, device: str = "auto") -> str:
    """``precision`` for a command whose recipe prefers bfloat16 where the CPU computes it
    natively: ``"auto"`` becomes ``"bf16"`` when ``device`` resolves to the CPU
    (:func:`pick_device`) and :func:`native_bf16` holds; any other value is returned as it is."""
    if precision == "auto" and pick_device(device).type == "cpu" and native_bf16():
        return "bf16"
    return precision


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Map ``--precision`` to the autocast dtype, or ``None`` for full fp32.

    ``auto`` means bf16 on a CUDA card that supports it, fp16 on older cards, fp32 on CPU
    and MPS (mixed precision on the CPU is slower than fp32 for these small models).
    """
    if precision == "32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    raise ValueError(f"--precision {precision!r}: expected one of auto, 32, bf16, 16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype``, or a no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun``; a no-op otherwise.

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. The backend is ``nccl``
    on CUDA and ``gloo`` everywhere else, so ``torchrun --nproc_per_node 2`` works on a CPU.
    """
    info = _launched_as()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        atexit.register(_leave_process_group)
    return info


def _launched_as() -> DistInfo:
    """Rank, world size and local rank as ``torchrun`` set them in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo()
    if "RANK" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={world_size} but RANK is not set: start several processes with torchrun")
    return DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)))


def _leave_process_group() -> None:
    # a process that exits with the group still open can abort in gloo's threads
    # ("terminate called without an active exception")
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def dist_info() -> DistInfo:
    """The current process's rank and world size (``DistInfo()`` when not distributed).

    Before the process group is joined, a process started by ``torchrun`` still knows its
    rank from the environment, so code that runs before the Trainer (making the run folder,
    saving ``args.json``) already writes on rank 0 only.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return _launched_as()


def broadcast_object(value, device: torch.device):
    """Rank 0's ``value`` on every process; ``value`` itself in a single-process run. Joins
    the process group if needed, with the backend for ``device`` (the one training will use)."""
    if not init_distributed(device).enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0, and always in a single-process run: only it writes files and logs."""
    return dist_info().is_main
