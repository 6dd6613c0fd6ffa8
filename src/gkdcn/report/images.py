"""PNG figures embedded in the report as data URIs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Image:
    """An embedded PNG with its caption."""

    src: str  # data URI
    title: str
    caption: str
    source: str  # path relative to the run folder, for the reader
    width: int
    height: int
    bold_title: bool = True  # False: the title is only the alt text (the caption says it all)


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when they are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def read_image(
    root: Path, relative: str, title: str, caption: str, problems: list[str]
) -> Image | None:
    """The PNG at ``root / relative`` for the report, or None when absent or unreadable.

    An unreadable file or one that is not a PNG adds a line to ``problems`` and is left out.
    """
    path = root / relative
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"{relative}: cannot read ({exc.strerror or exc}); left out")
        return None
    size = png_size(data)
    if size is None:
        problems.append(f"{relative}: not a PNG image; left out")
        return None
    return Image(png_data_uri(data), title, caption, relative, *size)
