"""LATS: Language Agent Tree Search (Zhou et al., 2023) over HumanEval problems.

Each iteration selects a node of the search tree (UCT descent from the root, as in LATS),
expands it with ``branching`` parallel sampling calls (prompt: the problem, its internal
tests and the node's trajectory of implementations, test results and reflections, as
refs), evaluates the children with ``branching`` parallel value calls and, unless a child
solved the problem, reflects on the best child with one call. Generated code is never
run: test results, values and success are drawn from the seeded generator, each child
passing with probability ``solve_prob``; the search stops then or after ``iterations``.

Defaults (vs. the paper's 159.71 calls, 467.24 prefill and 72.64 decode tokens per
call): ``branching=5`` as in LATS; ``iterations=20`` with ``solve_prob=0.007`` give ~14.6
iterations of 11 calls on average (and a long tail); ``max_depth=3`` and two internal
tests (the first asserts of the hidden test) keep the mean prompt at ~470 tokens; an
implementation is as long as the canonical solution with its signature (x0.75-1.25);
value and reflection outputs average 75 and 80 tokens (x0.5-1.5).

``scale`` shrinks texts and output lengths, never the search budget: a search keeps its
~160 calls, so at any scale a LATS program stays the long one beside a chat or a ReAct
loop, as in the paper's mix (pass ``iterations`` for a smaller search).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields

from autellix.workloads.humaneval import Problem, problems
from autellix.workloads.sampling import draw, poisson_arrivals
from autellix.workloads.spec import (
    CallSpec,
    Message,
    ProgramSpec,
    Stage,
    check_least,
    check_param,
)
from autellix.workloads.tokens import count, prompt_tokens, scaled, shrink

SAMPLE_SYSTEM = (
    "You are an AI that only responds with Python code. You will be given a function "
    "signature and its docstring, and the results of earlier attempts with reflections on "
    "them. Write the full implementation (restate the function signature)."
)
VALUE_SYSTEM = (
    "You are a Python grader. Given a function, an implementation and its test results, "
    "judge how likely the implementation is to be correct."
)
REFLECT_SYSTEM = (
    "You are a Python programming assistant. You will be given a function implementation "
    "and a series of unit tests. Your goal is to write a few sentences to explain why your "
    "implementation is wrong as indicated by the tests."
)
WRONG_OUTPUTS = ("None", "False", "True", "0", "[]", "''", "-1")


@dataclass
class Node:
    depth: int
    parent: Node | None = None
    impl: list[int] | None = None  # ref of the sampling call that wrote it
    results: str = ""  # its (made-up) unit test results, as a user message
    reflection: list[int] | None = None  # ref of the reflection on its expansion
    value: float = 0.0
    visits: int = 0
    children: list[Node] = field(default_factory=list)

    def path(self) -> list[Node]:
        """The nodes from the root's child down to this one."""
        nodes, node = [], self
        while node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


@dataclass
class Params:
    branching: int = 5
    max_depth: int = 3
    iterations: int = 20
    solve_prob: float = 0.007
    num_tests: int = 2
    value_tokens: int = 75
    reflection_tokens: int = 80
    c: float = 1.0  # UCT exploration weight
    test_delay: float = 0.0  # after each sampling call: running the internal tests

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            check_param(f.name, value, float if f.type == "float" else int)
            least = 0 if f.name in ("num_tests", "solve_prob", "c", "test_delay") else 1
            check_least(f.name, value, least)
        if self.solve_prob > 1:
            raise ValueError(f"solve_prob is a probability, not {self.solve_prob!r}")


def build(
    num_programs: int, rate: float, seed: int, scale: float = 1.0, **params
) -> list[ProgramSpec]:
    """``params``: the fields of :class:`Params`."""
    p = Params(**params)
    rng = random.Random(seed)
    picks = draw(problems(), rng)
    return [
        ProgramSpec(f"lats-{i}", "lats", arrival, Search(next(picks), p, rng, scale).run())
        for i, arrival in enumerate(poisson_arrivals(num_programs, rate, seed))
    ]


class Search:
    """One tree search, written out as stages."""

    def __init__(self, problem: Problem, p: Params, rng: random.Random, scale: float):
        self.p, self.rng, self.scale = p, rng, scale
        self.stages: list[Stage] = []
        self.lengths: list[list[int]] = []
        self.tests = problem.tests[: p.num_tests]
        self.prompt = problem.prompt
        tests = "\n".join(self.tests)
        self.task = f"{problem.prompt}\n[internal tests]:\n{tests}"
        self.impl_tokens = count(f"{problem.signature}\n{problem.solution}")

    def run(self) -> list[Stage]:
        root = Node(depth=0)
        for _ in range(self.p.iterations):
            node = self.select(root)
            children = self.expand(node)
            solved = self.evaluate(children)
            self.backpropagate(node, children)
            if solved:
                break
            self.reflect(children)
        return self.stages

    def select(self, root: Node) -> Node:
        """Descend from the root by UCT to a node not yet expanded, skipping subtrees
        with nothing left to expand (the root is expanded again if all are exhausted)."""
        node = root
        while node.children:
            open_ = [c for c in node.children if self.expandable(c)]
            if not open_:
                break
            node = max(open_, key=self.uct)
        return node

    def expandable(self, node: Node) -> bool:
        if node.depth >= self.p.max_depth:
            return False
        return not node.children or any(self.expandable(c) for c in node.children)

    def uct(self, node: Node) -> float:
        if node.visits == 0:  # as in LATS: an unvisited node is ranked by its value alone
            return node.value
        assert node.parent is not None
        return node.value + self.p.c * math.sqrt(math.log(node.parent.visits) / node.visits)

    def expand(self, node: Node) -> list[Node]:
        messages: list[Message] = [self.text("system", SAMPLE_SYSTEM), self.text("user", self.task)]
        for n in node.path():
            messages += [
                {"role": "assistant", "ref": n.impl},
                self.text("user", n.results),
                {"role": "assistant", "ref": n.reflection},
                self.text("user", "[improved implementation]:"),
            ]
        targets = [
            round(self.impl_tokens * self.rng.uniform(0.75, 1.25)) for _ in range(self.p.branching)
        ]
        stage = self.add_stage([self.call(messages, n, self.p.test_delay) for n in targets])
        children = []
        for i in range(self.p.branching):
            results, passed = self.unit_tests()
            # the value call's score stands in as a noisy reading of the tests passed
            value = (passed + self.rng.random()) / 2
            children.append(Node(node.depth + 1, node, [stage, i], results, value=value))
        node.children += children
        return children

    def unit_tests(self) -> tuple[str, float]:
        """Made-up results of the internal tests (each passes with probability 1/2), and
        the fraction passed."""
        passed, failed = [], []
        for test in self.tests:
            if self.rng.random() < 0.5:
                passed.append(test)
            else:
                failed.append(f"{test} # output: {self.rng.choice(WRONG_OUTPUTS)}")
        text = "\n".join(
            ["[unit test results]:", "Tests passed:", *passed, "", "Tests failed:", *failed]
        )
        return text, len(passed) / len(self.tests)

    def evaluate(self, children: list[Node]) -> bool:
        calls = []
        for child in children:
            messages = [
                self.text("system", VALUE_SYSTEM),
                self.text("user", self.prompt),
                {"role": "assistant", "ref": child.impl},
                self.text("user", f"{child.results}\n\nRate the implementation from 1 to 10."),
            ]
            calls.append(self.call(messages, self.jitter(self.p.value_tokens)))
        self.add_stage(calls)
        return any(self.rng.random() < self.p.solve_prob for _ in children)

    def backpropagate(self, node: Node, children: list[Node]) -> None:
        value = max(c.value for c in children)
        n: Node | None = node
        while n is not None:
            n.visits += 1
            n.value += (value - n.value) / n.visits
            n = n.parent

    def reflect(self, children: list[Node]) -> None:
        best = max(children, key=lambda c: c.value)
        messages = [
            self.text("system", REFLECT_SYSTEM),
            self.text("user", self.prompt),
            {"role": "assistant", "ref": best.impl},
            self.text("user", best.results),
        ]
        stage = self.add_stage([self.call(messages, self.jitter(self.p.reflection_tokens))])
        for child in children:
            child.reflection = [stage, 0]

    def text(self, role: str, content: str) -> Message:
        return {"role": role, "content": shrink(content, self.scale)}

    def jitter(self, mean: int) -> int:
        return round(mean * self.rng.uniform(0.5, 1.5))

    def call(self, messages: list[Message], target: int, delay: float = 0.0) -> CallSpec:
        target = scaled(target, self.scale)
        return CallSpec(messages, target, prompt_tokens(messages, self.lengths), delay)

    def add_stage(self, calls: list[CallSpec]) -> int:
        self.stages.append(Stage(calls))
        self.lengths.append([c.max_tokens for c in calls])
        return len(self.stages) - 1
