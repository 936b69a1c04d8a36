"""Calls in flight, per tenant and per program, and the caps on them.

A request's calls are counted from the moment they are admitted (before any replica sees
them, so that a burst of requests is counted whole) until the request's response ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


class TooMany(RuntimeError):
    """A cap on programs or calls is reached (HTTP 429, with `code`)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class NeverFits(ValueError):
    """A request with more calls than a cap allows at all (HTTP 400: retrying is futile)."""


@dataclass
class Ticket:
    """One request's calls, counted until `release` (which may be called again)."""

    ledger: InFlight
    tenant: str
    program_id: str
    calls: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.ledger.remove(self)


class InFlight:
    def __init__(self) -> None:
        self.tenants: Counter[str] = Counter()
        self.programs: Counter[str] = Counter()

    def admit(
        self,
        tenant: str,
        program_id: str,
        calls: int,
        tenant_cap: int | None,
        program_cap: int | None,
    ) -> Ticket:
        for cap, whose in ((tenant_cap, f"tenant {tenant!r}"), (program_cap, "a program")):
            if cap is not None and calls > cap:
                raise NeverFits(f"the request has {calls} calls; {whose} may have {cap} in flight")
        if tenant_cap is not None and self.tenants[tenant] + calls > tenant_cap:
            raise TooMany(
                f"tenant {tenant!r} has {self.tenants[tenant]} calls in flight, at most "
                f"{tenant_cap}; retry later",
                "too_many_calls",
            )
        if program_cap is not None and self.programs[program_id] + calls > program_cap:
            raise TooMany(
                f"the program has {self.programs[program_id]} calls in flight, at most "
                f"{program_cap}; retry later",
                "too_many_program_calls",
            )
        self.tenants[tenant] += calls
        self.programs[program_id] += calls
        return Ticket(self, tenant, program_id, calls)

    def remove(self, ticket: Ticket) -> None:
        for counts, key in ((self.tenants, ticket.tenant), (self.programs, ticket.program_id)):
            counts[key] -= ticket.calls
            if counts[key] <= 0:
                del counts[key]
