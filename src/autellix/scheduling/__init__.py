"""Scheduling policies. Pure: nothing here imports torch, the engine or the server."""

from autellix.scheduling.call import CallState
from autellix.scheduling.config import SchedulingConfig
from autellix.scheduling.fcfs import FCFS
from autellix.scheduling.gittins import Gittins, gittins_rank
from autellix.scheduling.las import ATLAS, PLAS
from autellix.scheduling.mlfq import MLFQ
from autellix.scheduling.policy import Policy, select_batch
from autellix.scheduling.queues import MultiLevelPolicy
from autellix.scheduling.srpt import SRPT

POLICIES: dict[str, type[Policy]] = {p.name: p for p in (FCFS, MLFQ, PLAS, ATLAS, Gittins, SRPT)}


def make_policy(name: str, config: SchedulingConfig | None = None) -> Policy:
    try:
        policy_cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None
    policy = policy_cls(config) if issubclass(policy_cls, MultiLevelPolicy) else policy_cls()
    config = config or SchedulingConfig()
    policy.tenant_shares = config.tenant_shares
    policy.preemptive = policy.preemptive and config.preempt
    return policy


__all__ = [
    "ATLAS",
    "FCFS",
    "MLFQ",
    "PLAS",
    "POLICIES",
    "SRPT",
    "CallState",
    "Gittins",
    "MultiLevelPolicy",
    "Policy",
    "SchedulingConfig",
    "gittins_rank",
    "make_policy",
    "select_batch",
]
