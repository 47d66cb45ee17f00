"""``kind = "memory"``: keeps messages in a list, for tests (Django's locmem backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pipeline.delivery import Message, Sender, SendResult


class MemorySender(Sender):
    """Appends every message to ``MemorySender.outbox``, shared by all instances."""

    name = "memory"
    batch_size = 100
    outbox: ClassVar[list[Message]] = []

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        MemorySender.outbox.extend(messages)
        return [SendResult(m, "sent", provider_id=f"memory-{len(MemorySender.outbox)}") for m in messages]
