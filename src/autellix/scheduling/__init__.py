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


def check_settings(name: str, config: SchedulingConfig) -> type[Policy]:
    """The policy class of `name`; settings that only other policies serve are refused,
    not ignored. Errors name a setting both as the config's field (the vLLM plug-in's
    JSON) and as `autellix serve`'s flag."""
    try:
        policy_cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None
    if not config.gittins_per_size and name != "gittins":
        raise ValueError(
            "gittins_per_size false (--no-gittins-per-size) applies only to policy gittins,"
            f" not {name!r}"
        )
    if config.skip_join and name != "mlfq":
        raise ValueError(f"skip_join (--skip-join) applies only to policy mlfq, not {name!r}")
    if config.batch_cut and not policy_cls.cuts_batch:
        cutters = ", ".join(n for n, p in POLICIES.items() if p.cuts_batch)
        raise ValueError(
            f"batch_cut (--batch-cut) needs one of the policies {cutters}, not {name!r}"
        )
    return policy_cls


def make_policy(name: str, config: SchedulingConfig | None = None) -> Policy:
    config = config or SchedulingConfig()
    policy_cls = check_settings(name, config)
    policy = policy_cls(config) if issubclass(policy_cls, MultiLevelPolicy) else policy_cls()
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
    "check_settings",
    "gittins_rank",
    "make_policy",
    "select_batch",
]
