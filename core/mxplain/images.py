"""Reading microscope tiles for ``mxplain data ingest``: bit depth, grey RGB, one rule per store.

Microscopes write 12- or 14-bit data into 16-bit TIFF or PNG files, and greyscale images as RGB.
Every tile of one ingest is mapped to ``uint8`` by one rule (:class:`Intensity`), so tiles keep
their brightness relative to each other:

* 8-bit tiles are stored as read;
* 16-bit tiles (``uint16``, or PIL's 32-bit ``I`` with values in 0..65535) are scaled by their
  *full scale*: the range the files **declare** (TIFF ``MaxSampleValue``, or ``BitsPerSample`` /
  PNG ``sBIT`` below 16 bits; the same in every file), else the **observed** one: ``2**b - 1`` for
  the smallest ``b`` of 8, 10, 12, 14, 16 that holds the largest value of all tiles (a 12-bit
  detector's 0..4080 is 12-bit: ``x * 255 / 4095``). A value above a declared range is an error;
* RGB (or RGBA, palette, grey + alpha) tiles whose colour channels are equal everywhere and that
  are opaque are read as grey; others are refused.

The readers are the ingest's dependencies: Pillow (PNG) and tifffile (TIFF).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mxplain.errors import UserError

DEPTHS = (8, 10, 12, 14, 16)


@dataclass
class RawTile:
    """One tile as the file holds it: ``(H, W)`` grey values, its container depth (1, 8 or 16
    bits), the full scale the file declares (``None``: none) and whether it was grey RGB."""

    values: np.ndarray
    container: int
    declared: int | None = None
    rgb_as_grey: bool = False


def _png_sbit(path: Path) -> int | None:
    """The significant bits a PNG declares (its ``sBIT`` chunk, the largest channel's), if any."""
    try:
        with path.open("rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return None
                data = f.read(length)
                f.read(4)  # CRC
                if kind == b"sBIT" and data:
                    return max(data)
    except OSError:
        return None


def _tiff(path: Path) -> tuple[np.ndarray, int | None]:
    """A TIFF's first image (colour samples last) and the full scale it declares, if any."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        arr = tf.asarray()
        axes = tf.series[0].axes
        bits = int(page.bitspersample or 0)
        tag = page.tags.get("MaxSampleValue")
    if axes.startswith("S") and arr.ndim == 3:  # planar RGB: samples first
        arr = np.moveaxis(arr, 0, -1)
    container = 16 if arr.dtype.itemsize == 2 else 8
    declared = None
    if tag is not None:
        value = tag.value
        value = max(value) if isinstance(value, (tuple, list)) else value
        if isinstance(value, (int, np.integer)) and 0 < int(value) < 2 ** container - 1:
            declared = int(value)
    if declared is None and 0 < bits < container:
        declared = 2 ** bits - 1
    return arr, declared


def _png(path: Path) -> tuple[np.ndarray, int | None]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode == "P" or im.mode == "PA":
            im = im.convert("RGBA")
        arr = np.asarray(im)
    bits = _png_sbit(path)
    container = 16 if arr.dtype.itemsize >= 2 else 8
    declared = 2 ** bits - 1 if bits is not None and 0 < bits < container else None
    return arr, declared


def _grey(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """``(H, W)`` grey values of a grey or grey-RGB(A) array, and whether it was RGB."""
    if arr.ndim == 2:
        return arr, False
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3, 4):
        raise UserError(f"tile {str(path)!r} has shape {arr.shape}: grayscale (H, W) expected, "
                        f"not a stack")
    colour = arr[..., :1] if arr.shape[-1] == 2 else arr[..., :3]
    alpha = arr[..., -1] if arr.shape[-1] in (2, 4) else None
    opaque = np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1
    if alpha is not None and np.any(alpha != opaque):
        raise UserError(f"tile {str(path)!r} has transparent pixels: opaque grayscale tiles "
                        f"expected")
    differ = np.any(colour != colour[..., :1], axis=-1)
    if differ.any():
        raise UserError(f"tile {str(path)!r} is RGB with channels that differ at "
                        f"{100 * differ.mean():.1f} % of its pixels, not grayscale; convert the "
                        f"tiles to grey first")
    return colour[..., 0], arr.shape[-1] != 2


def read_raw(path: Path) -> RawTile:
    """One tile as stored: grey values, container depth, declared full scale, grey RGB."""
    try:
        arr, declared = _tiff(path) if path.suffix.lower() in (".tif", ".tiff") else _png(path)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"tile {str(path)!r} is not a readable image ({type(exc).__name__})") \
            from None
    arr, rgb = _grey(np.asarray(arr), path)
    if arr.dtype == bool:
        return RawTile(arr.astype(np.uint8) * 255, 1, None, rgb)
    if arr.dtype == np.uint8:
        return RawTile(arr, 8, None, rgb)
    if arr.dtype in (np.uint16, np.int32, np.uint32) and (
            not arr.size or (arr.min() >= 0 and arr.max() <= 65535)):
        return RawTile(arr.astype(np.uint16), 16, declared, rgb)
    raise UserError(f"tile {str(path)!r} has dtype {arr.dtype}: 8- or 16-bit grayscale expected")


@dataclass
class Intensity:
    """The one rule that maps every tile of an ingest to ``uint8`` (see the module's text)."""

    container: int  # bits per sample in the files: 8 (or 1) or 16
    full_scale: int  # the value stored as 255
    rule: str  # "8-bit", "declared" or "observed"
    max_value: int  # the largest value of all tiles
    files: dict = field(default_factory=dict)  # counts: tiles read, grey RGB tiles

    @property
    def bits(self) -> int:
        return int(self.full_scale).bit_length()

    def to_uint8(self, raw: RawTile, path: Path) -> np.ndarray:
        if self.container <= 8:
            return raw.values.astype(np.uint8)
        v = raw.values.astype(np.float64)
        return np.clip(np.rint(v * 255.0 / self.full_scale), 0, 255).astype(np.uint8)

    def text(self) -> str:
        """The rule in words (printed by ingest, kept in the store's provenance)."""
        if self.container <= 8:
            return "8-bit tiles, stored as read"
        why = ("declared in the files" if self.rule == "declared" else
               f"observed: the largest value is {self.max_value}, no range declared in the files")
        return (f"16-bit files holding {self.bits}-bit data ({why}), scaled to 0-255 by "
                f"round(x * 255 / {self.full_scale})")

    def record(self) -> dict:
        return {"container_bits": self.container, "data_bits": self.bits if self.container > 8
                else 8, "full_scale": self.full_scale, "rule": self.rule,
                "max_value": self.max_value, "scale": self.text(), **self.files}


def survey(files: list[Path]) -> Intensity:
    """Read every tile once and choose the ingest's :class:`Intensity` rule; mixed 8- and 16-bit
    files, different declared ranges and values above a declared range are refused."""
    depths: dict[int, Path] = {}
    declared: dict[int | None, Path] = {}
    top, rgb = 0, 0
    for f in files:
        raw = read_raw(f)
        depths.setdefault(8 if raw.container <= 8 else 16, f)
        if raw.container > 8:
            declared.setdefault(raw.declared, f)
            peak = int(raw.values.max()) if raw.values.size else 0
            if raw.declared is not None and peak > raw.declared:
                raise UserError(f"tile {str(f)!r} has values up to {peak}, above the "
                                f"{raw.declared} its file declares as the largest")
            top = max(top, peak)
        rgb += raw.rgb_as_grey
    counts = {"tiles": len(files), "rgb_as_grey": rgb}
    if len(depths) > 1:
        raise UserError(f"tiles of different bit depths: {str(depths[8])!r} is 8-bit, "
                        f"{str(depths[16])!r} is 16-bit; convert them to one depth")
    if 16 not in depths:
        return Intensity(8, 255, "8-bit", 255, counts)
    if len(declared) > 1 and None not in declared:
        (a, fa), (b, fb) = list(declared.items())[:2]
        raise UserError(f"tiles declare different ranges: {str(fa)!r} up to {a}, {str(fb)!r} up "
                        f"to {b}; convert them to one")
    if len(declared) == 1 and None not in declared:
        return Intensity(16, next(iter(declared)), "declared", top, counts)
    bits = next(b for b in DEPTHS if top <= 2 ** b - 1)
    return Intensity(16, 2 ** bits - 1, "observed", top, counts)
