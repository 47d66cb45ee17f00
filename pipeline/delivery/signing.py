"""DKIM signing (RFC 6376, relaxed/relaxed) of a complete message, for newsletters and transactional mail alike."""

from __future__ import annotations

import dkim

from pipeline.config import DKIM_HEADERS, Settings
from pipeline.errors import ConfigError


class Signer:
    """Signs messages with ``[dkim]``'s key, read once."""

    def __init__(self, settings: Settings) -> None:
        assert settings.dkim is not None
        self.settings = settings
        self.dkim = settings.dkim
        path = settings.resolve(self.dkim.private_key_path)
        try:
            self.key = path.read_bytes()
        except OSError as err:
            raise ConfigError(
                f"cannot read the DKIM private key {path}: {err.strerror}",
                path=str(settings.path),
                key="dkim.private_key_path",
            ) from err

    def sign(self, data: bytes) -> bytes:
        """Prepend a DKIM-Signature covering the headers that matter to receivers."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if b":" in line
        }
        headers = [h.lower().encode() for h in DKIM_HEADERS if h.lower().encode() in present]
        try:
            signature = dkim.sign(
                data,
                self.dkim.selector.encode(),
                self.dkim.domain.encode(),
                self.key,
                include_headers=headers,
                canonicalize=(b"relaxed", b"relaxed"),
            )
        except (dkim.DKIMException, ValueError) as err:  # a mangled key: binascii.Error from its base64
            raise ConfigError(f"DKIM signing failed: {err}", path=str(self.settings.path), key="dkim") from err
        return signature + data


def signer_for(settings: Settings) -> Signer | None:
    """The project's signer, or None when ``[dkim]`` is not configured."""
    return Signer(settings) if settings.dkim is not None else None


__all__ = ["Signer", "signer_for"]
