"""The engine's own work per step (scheduling, bookkeeping, output objects and
detokenization) at 32, 256 and 1,024 running calls, against the step time of the
simulated A100 (Llama-3.1-8B, the simulator's roofline) for the same batch.

The executor is the simulator's (no model runs), so everything timed is the engine's
Python: `Scheduler.schedule` (the policy's order and batch fitting), the executor
call, `Scheduler.update_from_output` (service, queues, blocks, tokens, finishing) and
turning each new token into a `CallOutput` with its text (SmolLM2's tokenizer).

    python benchmarks/step_overhead.py --out benchmarks/results/step-overhead.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from autellix.engine.batch import StepShape
from autellix.engine.config import EngineConfig
from autellix.engine.executor import SimulatedExecutor
from autellix.engine.llm_engine import LLMEngine
from autellix.engine.model import default_model_path, load_tokenizer
from autellix.engine.sampling_params import SamplingParams
from autellix.machine import this_commit, this_machine
from autellix.sim.hardware import GPUS, MODELS
from autellix.sim.latency import Roofline

PROMPT = 512
OUTPUT = 2048  # long enough that no call ends while the others are prefilled and timed


def measure(running: int, policy: str, tokenizer, steps: int) -> dict[str, float]:
    roofline = Roofline(GPUS["a100"], MODELS["llama-3.1-8b"])
    simulated: list[float] = []

    def step_time(shape: StepShape) -> float:
        simulated.append(roofline(shape))
        return simulated[-1]

    blocks = running * (PROMPT + OUTPUT) // 16 + 64
    executor = SimulatedExecutor(step_time, 16, blocks, 0)
    config = EngineConfig(policy=policy, max_running=running, block_size=16)
    engine = LLMEngine(config, executor, tokenizer, max_model_len=1 << 20)
    rng = random.Random(0)
    for i in range(running):
        call = engine.add_call(
            [rng.randrange(3, 49152) for _ in range(PROMPT)],
            SamplingParams(max_tokens=OUTPUT, ignore_eos=True),
            program_id=f"p{i % max(1, running // 4)}",
        )
        executor.planned[call.call_id] = [rng.randrange(3, 49152) for _ in range(OUTPUT)]
    while any(not c.is_decode for c in engine.calls.values()):  # prefill everyone
        engine.step()
    parts = {"schedule": 0.0, "update": 0.0, "outputs": 0.0}
    simulated.clear()
    start = time.perf_counter()
    sizes = 0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = engine.scheduler.schedule(executor.clock())
        t1 = time.perf_counter()
        sizes += len(batch.calls)
        out = executor.execute(batch)
        t2 = time.perf_counter()
        now = executor.clock()
        advanced = engine.scheduler.update_from_output(batch, out.tokens, out.elapsed, now)
        t3 = time.perf_counter()
        [engine._detokenize(c, now) for c in advanced]
        t4 = time.perf_counter()
        parts["schedule"] += t1 - t0
        parts["update"] += t3 - t2
        parts["outputs"] += t4 - t3
    total = time.perf_counter() - start
    assert sizes == steps * running, "every call should be in every timed step"
    return {
        "step": total / steps,
        "simulated": statistics.mean(simulated),
        **{k: v / steps for k, v in parts.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--policy", default="plas")
    args = ap.parse_args()
    tokenizer = load_tokenizer(str(default_model_path()))
    rows = []
    for running in (32, 256, 1024):
        m = measure(running, args.policy, tokenizer, args.steps)
        share = m["step"] / m["simulated"]
        rows.append(
            f"| {running} | {m['simulated'] * 1e3:.1f} ms | {m['step'] * 1e3:.2f} ms | "
            f"{share:.1%} | {m['schedule'] * 1e3:.2f} | {m['update'] * 1e3:.2f} | "
            f"{m['outputs'] * 1e3:.2f} | {m['step'] / running * 1e6:.0f} us |"
        )
        print(rows[-1], flush=True)
    lines = [
        "# The engine's own work per decode step",
        "",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {this_machine()}; commit {this_commit()}; policy {args.policy}; "
        f"{PROMPT}-token prompts, all calls decoding",
        "",
        "| running calls | simulated A100 step | engine work per step | share | schedule ms "
        "| update ms | outputs + text ms | per call |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
