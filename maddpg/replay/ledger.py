"""The intake ledger: how far into each explorer life's chunks the learner has consumed (exactly-once intake).

Every explorer life (an explorer process, named `explorer_id/run_id`) numbers its chunks 1, 2, 3, ... and the
learner consumes them in that order. The ledger keeps, per life, the highest seq consumed; a checkpoint stores
it beside the counters it accounts for, so a restored learner skips every chunk it already holds, whatever
happened to the queue's acknowledgements, and counts a gap (chunks that never arrived, e.g. a Redis that lost
its data) as lost instead of waiting for them.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class Verdict(Enum):
    NEW = "new"  # the next chunk of its life: consume it
    DUPLICATE = "duplicate"  # already consumed (a resend, or re-read after a restart): skip it


def life_key(explorer_id: str, run_id: str) -> str:
    return f"{explorer_id}/{run_id}"


class IntakeLedger:
    """Per explorer life, the last chunk seq consumed.

    Args:
      positions: a checkpoint's `snapshot()` to continue from (None: nothing consumed yet).
      max_lives: lives remembered; the least recently active are forgotten beyond it (an explorer life that
        has not sent anything through `max_lives` newer lives is long gone).
    """

    def __init__(self, positions: dict[str, int] | None = None, max_lives: int = 10_000):
        self._last: OrderedDict[str, int] = OrderedDict((k, int(v)) for k, v in (positions or {}).items())
        self._max_lives = max_lives
        self.duplicates = 0  # chunks skipped because they were already consumed
        self.lost = 0  # chunks that never arrived (gaps in a life's numbering)

    def classify(self, key: str, seq: int) -> tuple[Verdict, int]:
        """The verdict on chunk `seq` of life `key`, and how many chunks before it were lost (a gap)."""
        last = self._last.get(key, 0)
        if seq <= last:
            return Verdict.DUPLICATE, 0
        return Verdict.NEW, seq - last - 1

    def consume(self, key: str, seq: int) -> int:
        """Records chunk `seq` of life `key` as consumed (whether it was inserted or refused as malformed);
        returns the chunks lost before it. A duplicate is counted and changes nothing."""
        verdict, lost = self.classify(key, seq)
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
            return 0
        self.lost += lost
        self._last[key] = seq
        self._last.move_to_end(key)
        while len(self._last) > self._max_lives:
            self._last.popitem(last=False)
        return lost

    def next_seq(self, key: str) -> int:
        """The seq of the next chunk life `key` should send."""
        return self._last.get(key, 0) + 1

    def skip_to(self, key: str, seq: int) -> None:
        """Chunks of life `key` before `seq` will never come: stop waiting for them (the consumer of the chunks
        counts the gap as lost when the next one arrives)."""
        if seq > self.next_seq(key):
            self._last[key] = seq - 1
            self._last.move_to_end(key)

    def last(self, key: str) -> int:
        """The last seq of life `key` consumed (0: none)."""
        return self._last.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        """The positions, for a checkpoint (a copy)."""
        return dict(self._last)
