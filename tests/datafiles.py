"""Real digits (scikit-learn's 1,797 8x8 scans, scaled to 0-255) written out in every upload format."""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib

import numpy as np
from PIL import Image


def digits(n: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images[:n] * 255 / 16).astype(np.uint8)
    return images, bunch.target[:n].astype(np.uint8)


def idx(array: np.ndarray, *, gz: bool = False) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    return gzip.compress(data) if gz else data


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def image_csv(x: np.ndarray, y: np.ndarray) -> bytes:
    header = "label," + ",".join(f"pixel{i}" for i in range(x[0].size))
    rows = [f"{label}," + ",".join(str(int(v)) for v in image.ravel()) for image, label in zip(x, y)]
    return ("\n".join([header, *rows]) + "\n").encode()


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_zip(x: np.ndarray, y: np.ndarray, *, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for i, (image, label) in enumerate(zip(x, y)):
            z.writestr(f"digits/{label}/{i:05d}.png", png(image))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buffer.getvalue()


def timeseries_csv(n: int = 96, *, freq_minutes: int = 30, drop: tuple[int, ...] = ()) -> bytes:
    start = np.datetime64("2024-06-01T00:00")
    lines = ["time,power,temperature"]
    for i in range(n):
        if i in drop:
            continue
        t = start + np.timedelta64(i * freq_minutes, "m")
        lines.append(f"{t}:00,{100 + 50 * np.sin(i / 8):.3f},{20 + i % 5}")
    return ("\n".join(lines) + "\n").encode()


# -- hostile files: small on the wire, huge once read ------------------------------------------------------


def zip_with(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def idx_header_only(*dims: int) -> bytes:
    """An IDX header that claims ``dims`` (uint8) and no data at all."""
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a huge grey image in a few dozen bytes (its data would inflate to width*height)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def gzip_bomb(inflated: int) -> bytes:
    """Zeros that inflate to ``inflated`` bytes (a multiple of 16 MiB): one gzip member of 16 MiB, repeated, as
    gzip allows. About 1,000 times smaller than what it inflates to."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (inflated // (16 << 20))


def npz_bomb(elements: int) -> bytes:
    """An NPZ whose array ``x`` holds ``elements`` float32 zeros, written without holding them: a gigabyte
    of array in about a megabyte of file."""
    import numpy.lib.format as npy

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (elements,)})
            chunk = b"\0" * (1 << 20)
            for _ in range(elements * 4 >> 20):
                f.write(chunk)
        z.writestr("y.npy", _npy(np.zeros(1, np.int64)))
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
