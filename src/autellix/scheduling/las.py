"""Program-level least attained service: PLAS and ATLAS.

Both rank a call by its program's service when it arrived plus its own service
since; they differ only in what "its program's service" is, which the process
table keeps: PLAS the sum over completed calls (single-threaded programs), ATLAS
the longest critical path seen so far (multi-threaded programs), so that a
program's parallel threads are not charged for each other.
"""

from __future__ import annotations

from autellix.scheduling.call import CallState
from autellix.scheduling.queues import MultiLevelPolicy


class PLAS(MultiLevelPolicy):
    name = "plas"
    cuts_batch = True

    def entry_priority(self, call: CallState) -> float:
        return call.program.service


class ATLAS(MultiLevelPolicy):
    name = "atlas"
    cuts_batch = True

    def entry_priority(self, call: CallState) -> float:
        return call.program.critical_path
