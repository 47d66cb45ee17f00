"""Images flygblad keeps: checked and resized with Pillow, named by content hash (lead images, list logos).

Shared by the collector (lead images, :mod:`pipeline.sources.images`) and the
renderer (a list's logo). Files are named by the SHA-256 of the original bytes,
so a file never changes and can be cached for a year.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path

from pipeline.types import MEDIA_WIDTHS, Media

#: Larger images are refused before they are decoded (a 40-megapixel photo is 160 MB in memory).
MAX_PIXELS = 40_000_000
FORMATS = {"JPEG", "PNG", "GIF", "WEBP"}
WIDTHS = MEDIA_WIDTHS


class NotAnImage(Exception):
    """The bytes are not an image flygblad can show in an email."""


def keep_image(data: bytes, folder: Path) -> tuple[str, str, int, int]:
    """Write *data*'s renditions into *folder*; (digest, extension, width, height) of the upright original."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise NotAnImage(f"more than {MAX_PIXELS:,} pixels") from err
    except UnidentifiedImageError as err:
        raise NotAnImage("not a readable image (the server sent something that is not one)") from err
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for a broken or hostile file
        raise NotAnImage(f"not a readable image ({type(err).__name__})") from err
    try:
        with opened:
            if opened.format not in FORMATS:
                raise NotAnImage(f"a {opened.format} image, not one an email can show (JPEG, PNG, GIF, WebP)")
            if opened.width * opened.height > MAX_PIXELS:
                raise NotAnImage(f"{opened.width}×{opened.height} pixels is more than {MAX_PIXELS:,}")
            opened.seek(0)  # an animation: its first frame
            image = ImageOps.exif_transpose(opened)
            image.load()
    except NotAnImage:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for a broken or hostile file
        raise NotAnImage(f"not a readable image ({type(err).__name__}: {err})") from err
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if alpha else "RGB")
    ext = "png" if alpha else "jpg"
    digest = hashlib.sha256(data).hexdigest()[:32]
    width, height = image.size
    folder.mkdir(parents=True, exist_ok=True)
    for target in WIDTHS:
        shown = min(target, width)
        path = folder / f"{digest}-{shown}.{ext}"
        if path.exists():
            continue
        copy = (
            image
            if shown == width
            else image.resize((shown, max(1, round(height * shown / width))), Image.Resampling.LANCZOS)
        )
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # two threads may keep one picture
        if alpha:
            copy.save(temp, format="PNG", optimize=True)
        else:
            copy.save(temp, format="JPEG", quality=82, optimize=True, progressive=True)
        temp.replace(path)
    return digest, ext, width, height


def keep_file(path: Path, folder: Path) -> Media:
    """An image file of the project's own (a list's logo) kept like a lead image; NotAnImage when it is not one."""
    digest, ext, width, height = keep_image(path.read_bytes(), folder)
    return Media(str(path), digest, ext, width, height)


__all__ = ["MAX_PIXELS", "NotAnImage", "keep_file", "keep_image"]
