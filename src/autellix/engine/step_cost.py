"""What a step costs, learned from the steps this engine runs: seconds = fixed + per new
token + per sequence + per context token (the linear model `autellix profile` fits),
refitted by least squares over recent steps, older ones weighing less. The batch cut
(scheduling/cut.py) asks it what a call adds to a step."""

from __future__ import annotations

import numpy as np

from autellix.engine.call import Call


class StepCost:
    def __init__(self, memory: float = 0.995, min_steps: int = 32, ridge: float = 1e-9) -> None:
        self.memory = memory  # each step's weight decays by this much per step after it
        self.min_steps = min_steps
        self.ridge = ridge
        self.gram = np.zeros((4, 4))
        self.moment = np.zeros(4)
        self.steps = 0
        self.coefficients: tuple[float, float, float, float] | None = None

    def observe(self, calls: list[Call], num_new: list[int], seconds: float) -> None:
        if not calls or seconds <= 0:
            return
        tokens = sum(num_new)
        context = sum(c.num_computed + n for c, n in zip(calls, num_new, strict=True))
        x = np.array([1.0, tokens, len(calls), context])
        self.gram = self.memory * self.gram + np.outer(x, x)
        self.moment = self.memory * self.moment + seconds * x
        self.steps += 1
        if self.steps >= self.min_steps and self.steps % 8 == 0:
            fit = np.linalg.solve(self.gram + self.ridge * np.eye(4), self.moment)
            c = np.clip(fit, 0.0, None)
            self.coefficients = (float(c[0]), float(c[1]), float(c[2]), float(c[3]))

    @property
    def fixed(self) -> float:
        return self.coefficients[0] if self.coefficients else 0.0

    def of(self, call: Call, new_tokens: int) -> float:
        """Seconds the call adds to a step that computes `new_tokens` of it."""
        if self.coefficients is None:
            return 0.0
        _, per_token, per_seq, per_context = self.coefficients
        return per_token * new_tokens + per_seq + per_context * (call.num_computed + new_tokens)
