"""Latency models: how long one engine step takes, from a batch's shape.

A step's shape (`engine.batch.StepShape`) is what the executor is asked to do. Two
models: a roofline from datasheet numbers, for accelerators we do not have, and a linear
fit to steps timed on this machine by `autellix profile`, to check the simulator against
the real engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autellix.engine.batch import StepShape
from autellix.sim.hardware import GPU, ModelShape


@dataclass(frozen=True)
class Roofline:
    """max(compute, memory) time per step, plus tensor-parallel all-reduces and a fixed
    per-step overhead (scheduling, sampling, kernel launches)."""

    gpu: GPU
    model: ModelShape
    tp: int = 1
    compute_efficiency: float = 0.5  # achieved fraction of peak FLOP/s (large GEMMs)
    bandwidth_efficiency: float = 0.8  # achieved fraction of HBM bandwidth
    step_overhead: float = 0.004  # seconds per step
    interconnect: float = 250e9  # NVLink bytes/s per GPU, for tensor parallelism
    allreduce_latency: float = 8e-6

    def __call__(self, shape: StepShape) -> float:
        return self.decode_times(shape, 1)[0]

    def decode_times(self, shape: StepShape, steps: int) -> list[float]:
        """The times of `shape` and of the `steps - 1` decode steps after it (each of
        `shape.decoded(i)`), in one loop: fast-forward asks for dozens at once."""
        m = self.model
        per_pair = 4 * m.num_layers * m.hidden
        weight_flops = 2 * m.params * shape.new_tokens
        peak = self.tp * self.gpu.flops * self.compute_efficiency
        bandwidth = self.tp * self.gpu.bandwidth * self.bandwidth_efficiency
        comm = 0.0
        if self.tp > 1:  # two all-reduces of the activations per layer (ring)
            size = shape.new_tokens * m.hidden * m.bytes_per_param
            ring = 2 * (self.tp - 1) / self.tp * size / self.interconnect
            comm = 2 * m.num_layers * (self.allreduce_latency + ring)
        times = []
        for i in range(steps):
            grown = i * shape.num_seqs
            compute = (weight_flops + per_pair * (shape.attention_pairs + grown)) / peak
            kv_bytes = (shape.context_tokens + grown + shape.new_tokens) * m.kv_bytes_per_token
            memory = (m.weight_bytes + kv_bytes) / bandwidth
            times.append(max(compute, memory) + comm + self.step_overhead)
        return times

    def swap_time_per_block(self, block_size: int) -> float:
        """Each GPU moves its shard of a block over its own host link."""
        return block_size * self.model.kv_bytes_per_token / self.tp / self.gpu.host_link

    def kv_blocks(self, block_size: int, memory_utilization: float = 0.9) -> int:
        """The KV pool: what is left of the GPUs' memory after the weights and a reserve
        for activations (vLLM's gpu_memory_utilization)."""
        free = self.tp * self.gpu.memory_bytes * memory_utilization - self.model.weight_bytes
        if free <= 0:
            raise ValueError(
                f"{self.model.name} does not fit on {self.tp} x {self.gpu.name}; raise --tp"
            )
        return int(free // (block_size * self.model.kv_bytes_per_token))


def features(shape: StepShape) -> list[float]:
    return [1.0, shape.new_tokens, shape.num_seqs, shape.context_tokens]


@dataclass
class Profile:
    """step time = a + b * new tokens + c * sequences + d * context tokens, fitted by
    least squares to steps of the real engine (`autellix profile`)."""

    coefficients: list[float]
    swap_time_per_block: float
    bytes_per_block: int
    block_size: int
    num_blocks: int
    machine: str = ""
    model: str = ""
    samples: list[tuple[list[float], float]] | None = None  # (features, seconds)
    provenance: list[str] = field(default_factory=list)  # the command, commit and date

    def __call__(self, shape: StepShape) -> float:
        return max(0.0, sum(c * x for c, x in zip(self.coefficients, features(shape), strict=True)))

    @classmethod
    def fit(cls, samples: list[tuple[StepShape, float]], **info) -> Profile:
        import numpy as np

        x = np.array([features(s) for s, _ in samples])
        y = np.array([t for _, t in samples])
        coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
        rows = [(features(s), t) for s, t in samples]
        return cls([float(c) for c in coefficients], samples=rows, **info)

    def error(self) -> float:
        """Mean relative error of the fit over its own samples."""
        rows = self.samples or []
        if not rows:
            return float("nan")
        return sum(
            abs(sum(c * x for c, x in zip(self.coefficients, f, strict=True)) - t) / t
            for f, t in rows
        ) / len(rows)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            why = f"{path} is not a profile written by `autellix profile`: {exc}"
            raise ValueError(why) from None
