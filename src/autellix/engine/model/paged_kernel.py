"""The C++ kernels for CPUs: decode attention over the paged KV cache
(csrc/paged_attention.cpp) and a layer's elementwise ops, each one pass (csrc/layer_ops.cpp:
RMS norm with the residual add, rotary embedding, SiLU-and-multiply; `LlamaForCausalLM`
uses them where the attention kernel is in use) and products of a few rows on oneDNN's
packed weights (csrc/few_rows.cpp, used by `linear.PackedLinear`).

The torch path gathers each layer's K/V blocks into a padded copy and multiplies that: the
KV is read three times and the padding computed. The kernel reads each block where it lies,
once for K and once for V, for all the query heads of a KV head together, threads over
(sequence, KV head) (`python benchmarks/decode_attention.py`). It is compiled on first use
for this machine (``-march=native``) with torch's extension builder, into the cache
(``$AUTELLIX_CACHE/kernels``) under a name that hashes the sources, torch's version and the
CPU's flags, so a copy built for another CPU is never loaded; `make test` and `make demo`
build it at setup (about 25 s on two cores).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch

from autellix.engine.model.default_model import cache_dir
from autellix.machine import cpu_model_and_flags

AttentionKernel = Literal["auto", "paged", "torch"]

SOURCES = [
    Path(__file__).with_name("csrc") / f
    for f in ("paged_attention.cpp", "layer_ops.cpp", "few_rows.cpp")
]
# -ffast-math lets the compiler vectorize the sums and exp; it is not passed to the linker,
# so the library does not set the process's flush-to-zero mode when loaded.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
LDFLAGS = ["-fopenmp"]  # torch's own libgomp serves it at run time

logger = logging.getLogger(__name__)


def build_name() -> str:
    cpu, flags = cpu_model_and_flags()
    key = hashlib.sha256()
    sources = [source.read_bytes() for source in SOURCES]
    for part in (*sources, torch.__version__, cpu, sorted(flags), CFLAGS):
        key.update(repr(part).encode())
    return f"autellix_paged_attention_{key.hexdigest()[:16]}"


@functools.cache
def load() -> ModuleType:
    """The compiled kernel, built on first use; RuntimeError says why it cannot be."""
    from torch.utils import cpp_extension

    name = build_name()
    folder = cache_dir() / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ImportError):  # torch runs `ninja` from PATH: ours first
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
    try:
        # torch's own lock is a file that a killed build (Ctrl-C, a timeout) leaves behind,
        # and every later build waits on it forever; ours is released by the OS when its
        # process dies, and whoever holds it removes torch's
        with open(folder / "autellix.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            (folder / "lock").unlink(missing_ok=True)
            return cpp_extension.load(
                name,
                [str(source) for source in SOURCES],
                extra_cflags=CFLAGS,
                extra_ldflags=LDFLAGS,
                build_directory=str(folder),
            )
    except Exception as e:  # a missing compiler or ninja, a failed build: all one answer
        raise RuntimeError(f"the C++ kernels did not build ({e})") from e


def why_not(
    device: torch.device | str, dtype: torch.dtype, head_dim: int, group: int
) -> str | None:
    """Why the kernel cannot serve a model of this shape here; None where it can."""
    if torch.device(device).type != "cpu":
        return "it runs on CPUs only"
    if dtype not in (torch.float32, torch.bfloat16):
        return f"it serves float32 and bfloat16, not {dtype}"
    try:
        shapes = load().shapes
    except RuntimeError as e:
        return str(e)
    if (head_dim, group) not in shapes:
        return f"it has no instance for head size {head_dim} with {group} query heads a KV head"
    return None


def resolve_attention(
    kernel: str, device: torch.device | str, dtype: torch.dtype, head_dim: int, group: int
) -> Literal["paged", "torch"]:
    """``auto`` is the C++ kernel where it serves (a CPU, float32 or bfloat16, a head shape
    it is built for, and it builds), else torch's; ``paged`` where it cannot is an error."""
    if kernel not in ("auto", "paged", "torch"):
        raise ValueError(f"attention kernel must be auto, paged or torch, not {kernel!r}")
    if kernel == "torch":
        return "torch"
    why = why_not(device, dtype, head_dim, group)
    if why is None:
        return "paged"
    if kernel == "paged":
        raise ValueError(f"the paged attention kernel cannot serve this model: {why}")
    logger.warning("decode attention falls back to torch's: %s", why)
    return "torch"
