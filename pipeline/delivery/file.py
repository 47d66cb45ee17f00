"""``kind = "file"``: one ``.eml`` file per message, named by its Message-ID.

The default sender and the dry run: nothing leaves the machine, and every
message can be opened in a mail program as it would have arrived. (Django's
filebased email backend.) A file is written under a temporary name and renamed,
so a crash never leaves half a message behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.delivery import Message, Sender, SendResult
from pipeline.errors import DeliveryError


def file_name(message_id: str) -> str:
    """A safe file name for a Message-ID."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", message_id) + ".eml"


class FileSender(Sender):
    """Writes each message to ``[sender] dir`` (default ``outbox/``, next to the config)."""

    name = "file"
    batch_size = 50

    @property
    def directory(self) -> Path:
        return self.app.outbox_dir

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DeliveryError(f"cannot create the outbox folder {self.directory}: {err.strerror}") from err
        super().open()

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results = []
        for message in messages:
            path = self.directory / file_name(message.message_id)
            temp = path.with_suffix(".eml.tmp")
            try:
                temp.write_bytes(message.data)
                os.replace(temp, path)
            except OSError as err:
                # A full disk or a read-only folder is ours to fix, not the recipient's: pause.
                temp.unlink(missing_ok=True)
                reply = f"cannot write {path}: {err.strerror}"
                self.pause(reply)
                results.append(SendResult(message, "deferred", reply=reply))
                continue
            results.append(SendResult(message, "sent", provider_id=path.name, reply=f"written to {path}"))
        return results
