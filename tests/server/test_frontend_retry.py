"""A replica that dies before a call's first token: the call moves to a live one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from autellix.engine.config import EngineConfig
from autellix.engine.sampling_params import SamplingParams
from autellix.server.frontend import Frontend, ServeConfig
from autellix.server.replica import LocalReplica, ReplicaDied


class DiesOnFirstCall(LocalReplica):
    async def _generate(self, token_ids, params, call_id, program_id, program):
        self.alive = False
        raise ReplicaDied(f"engine replica {self.engine_id} died")
        yield  # an async generator, like the real ones


def test_call_is_retried_on_a_live_replica(tiny_llama: Path) -> None:
    engine = EngineConfig(model=str(tiny_llama), block_size=4, num_kv_blocks=64)
    config = ServeConfig(engine=engine, replicas=2, balancer="round-robin")
    frontend = Frontend(config, replicas=[DiesOnFirstCall(0, engine), LocalReplica(1, engine)])

    async def main() -> list:
        await frontend.start()
        try:
            params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
            return [out async for out in frontend.stream([5, 6, 7], params, "p", None)]
        finally:
            await frontend.stop()

    outputs = asyncio.run(main())
    assert outputs[-1].finished and outputs[-1].num_output_tokens == 4
    program = frontend.table.get("p")
    assert program.completed_calls == 1 and program.engines == {0, 1}
    assert [r.alive for r in frontend.replicas] == [False, True]
    assert frontend.metrics.replica_failures._value.get() == 1
    frontend.replicas[1].engine.check_idle()
