"""Where a result came from: code version, device, processor, time and library versions."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from explorer.core.device import describe_device

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # explorer/
REPO_DIR = PACKAGE_DIR.parent
GIT_TIMEOUT_S = 5.0


def _git(*args: str) -> str | None:
    """Run a git command in the repo; None if git is missing, slow or fails."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _git_version() -> str | None:
    """'git:<short sha>[+dirty]' if the package lives at the top of a git checkout."""
    top = _git("rev-parse", "--show-toplevel")
    # An installed copy may sit inside some unrelated repository; only trust our own.
    if not top or Path(top).resolve() != REPO_DIR:
        return None
    sha = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain")
    if not sha or status is None:
        return None
    return f"git:{sha}{'+dirty' if status else ''}"


def _source_version() -> str:
    """'src:<hash>' over the package's Python sources, for copies without git."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"src:{digest.hexdigest()[:12]}"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The version of the code that produced a result, computed once per process."""
    return _git_version() or _source_version()


ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "neon", "asimd", "sve")  # instruction sets kernels dispatch on


@functools.lru_cache(maxsize=1)
def cpu_description() -> str:
    """The processor as float kernels see it: model name, the instruction-set level PyTorch dispatches to, the
    vector / matrix instruction sets oneDNN and MKL pick kernels by, the CPU family / model / stepping and the
    cache sizes they block their loops by (a virtual machine may show one model name for other processors). Two
    machines with different strings may round differently (another kernel, another summation order); equal
    strings are what exact recomputes need."""
    model, flags, ids = "", set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # Linux; the first processor's lines
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in ("model name", "Model") and not model:
                model = value
            elif key in ("flags", "Features") and not flags:
                flags = {f for f in value.split() if f.startswith(ISA_PREFIXES)}
            elif key in ("cpu family", "model", "stepping", "CPU part", "CPU variant") and key not in ids:
                ids[key] = value
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "unknown"
    parts = [model, f"torch {capability}"] + ([" ".join(sorted(flags))] if flags else [])
    if ids:
        parts.append(" ".join(f"{k.removeprefix('cpu ')} {v}" for k, v in ids.items()))
    if caches := _cache_sizes():
        parts.append(caches)
    return "; ".join(parts)


def _cache_sizes() -> str:
    """The first processor's data and unified caches, "L1d 48K L2 2048K L3 107520K" (Linux sysfs), or ""."""
    out = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            out.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return " ".join(out)


def provenance(device: str | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance for a result: code, device, processor, UTC creation time, versions, plus `extra`."""
    return {
        "code_version": code_version(),
        "device": describe_device() if device is None else device,
        "cpu": cpu_description(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }
