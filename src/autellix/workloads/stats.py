"""Workload statistics, beside the means the paper reports for its workloads."""

from __future__ import annotations

from collections import Counter
from statistics import fmean
from typing import Any

from autellix.workloads.spec import CallSpec, ProgramSpec, is_ref

# The paper's per-workload means (Luo et al., 2025), keyed by the statistic they match.
# Its ShareGPT prefill figure is below a single multi-turn prompt and matches the tokens
# a turn adds to the prompt it continues (see chatbot.py), hence "new" there.
PAPER: dict[str, dict[str, float]] = {
    "chatbot": {"calls_per_program": 6.66, "new_prefill_tokens_per_call": 255.65,
                "decode_tokens_per_call": 276.81},
    "react": {"calls_per_program": 10.75, "prefill_tokens_per_call": 735.06,
              "decode_tokens_per_call": 34.14},
    "lats": {"calls_per_program": 159.71, "prefill_tokens_per_call": 467.24,
             "decode_tokens_per_call": 72.64},
}  # fmt: skip

ROWS = [
    ("programs", "programs"),
    ("calls_per_program", "calls / program"),
    ("prefill_tokens_per_call", "prefill tokens / call"),
    ("new_prefill_tokens_per_call", "new prefill tokens / call"),
    ("decode_tokens_per_call", "decode tokens / call"),
    ("parallel_calls_per_stage", "parallel calls / stage"),
    ("max_parallel_calls", "max parallel calls"),
    ("tool_delay", "tool delay / call (s)"),
]


def new_prefill_tokens(spec: ProgramSpec, call: CallSpec) -> int:
    """``call``'s prompt tokens beyond the prompt of the earlier call it continues (an
    earlier call whose whole prompt, then its output, open this prompt). That earlier
    output counts as new."""
    calls = [stage.calls for stage in spec.stages]
    best = 0
    for i, m in enumerate(call.messages):
        if is_ref(m):
            earlier = calls[m["ref"][0]][m["ref"][1]]
            if earlier.messages == call.messages[:i]:
                best = max(best, earlier.prompt_tokens)
    return call.prompt_tokens - best


def stats(specs: list[ProgramSpec]) -> dict[str, Any]:
    if not specs:
        raise ValueError("no programs")
    calls = [call for spec in specs for call in spec.calls]
    stages = [stage for spec in specs for stage in spec.stages]
    kinds = Counter(spec.workload for spec in specs)
    return {
        "workload": next(iter(kinds)) if len(kinds) == 1 else "mixed",
        "workloads": dict(kinds),
        "programs": len(specs),
        "calls_per_program": fmean(spec.num_calls for spec in specs),
        "prefill_tokens_per_call": fmean(call.prompt_tokens for call in calls),
        "new_prefill_tokens_per_call": fmean(
            new_prefill_tokens(spec, call) for spec in specs for call in spec.calls
        ),
        "decode_tokens_per_call": fmean(call.max_tokens for call in calls),
        "parallel_calls_per_stage": fmean(len(stage.calls) for stage in stages),
        "max_parallel_calls": max(len(stage.calls) for stage in stages),
        "tool_delay": fmean(call.tool_delay for call in calls),
    }


def format_stats(result: dict[str, Any]) -> str:
    """A small table: our means, and the paper's beside the ones it reports."""
    paper = PAPER.get(result["workload"], {})
    kinds = ", ".join(f"{n} {kind}" for kind, n in result["workloads"].items())
    lines = [f"workload: {result['workload']} ({kinds} programs)"]
    lines.append(f"{'':28s}{'ours':>10s}{'paper':>10s}")
    for key, label in ROWS:
        ours = result[key]
        ours_text = f"{ours:10d}" if isinstance(ours, int) else f"{ours:10.2f}"
        theirs = f"{paper[key]:10.2f}" if key in paper else f"{'-':>10s}"
        lines.append(f"{label:28s}{ours_text}{theirs}")
    return "\n".join(lines)
