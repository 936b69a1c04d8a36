"""What the simulator knows of accelerators and models: datasheet numbers only."""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bandwidth: float  # HBM bytes/s
    flops: float  # dense bf16 FLOP/s
    host_link: float  # host <-> device bytes/s, one direction (swap)


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: float
    num_layers: int
    hidden: int
    num_kv_heads: int
    head_dim: int
    max_model_len: int
    bytes_per_param: int = 2  # bf16

    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.bytes_per_param


GPUS = {
    # A100-SXM4-80GB: 2,039 GB/s HBM2e, 312 TFLOP/s bf16; PCIe 4.0 x16 ~25 GB/s achieved
    "a100": GPU("A100-80GB", 80 * GiB, 2.039e12, 312e12, 25e9),
    # H100-SXM5-80GB: 3.35 TB/s HBM3, 989 TFLOP/s bf16 dense; PCIe 5.0 x16 ~50 GB/s achieved
    "h100": GPU("H100-80GB", 80 * GiB, 3.35e12, 989e12, 50e9),
}

MODELS = {
    "llama-3.1-8b": ModelShape("Llama-3.1-8B", 8.03e9, 32, 4096, 8, 128, 131072),
    "llama-3.1-70b": ModelShape("Llama-3.1-70B", 70.6e9, 80, 8192, 8, 128, 131072),
}

# The paper's deployments: 8B on one GPU, 70B over four with tensor parallelism.
DEFAULT_TP = {"llama-3.1-8b": 1, "llama-3.1-70b": 4}


def lookup(table: dict, name: str, what: str):
    try:
        return table[name.lower()]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}") from None
