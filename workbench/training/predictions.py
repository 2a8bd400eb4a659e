"""Per-image predictions: which test images a trained model got right, packed a bit per image, with a
fingerprint of the test set they were scored on.

Two models scored on the same images make correlated errors, so the noise of their top-1 difference is far
below the sum of two binomial variances; only the per-image record lets a study pair them (see
`workbench.study.paired`). The fingerprint (the test images' content and labels, in order) says which records
can be paired: the same dataset file at another resolution, or a folder that gained an image, is another test
set. A record is small: 45 bytes of bits for the 360 digits test images, 6.3 KB for ImageNet's 50,000.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np

FORMAT = 1


def pack(hits: np.ndarray) -> str:
    """A boolean vector as base64 text of its bits (JSON-safe, 4/3 of the packed bytes)."""
    return base64.b64encode(np.packbits(np.asarray(hits, dtype=bool)).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if len(bits) < n:
        raise ValueError(f"per-image record holds {len(bits)} bits, expected {n}")
    return bits[:n].astype(bool)


def fingerprint_of(ds) -> str:
    """16 hex digits naming the test split: its labels and its images (pixels held in memory, or the listed file
    names of a streamed folder), in evaluation order."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.test_y, dtype=np.int64).tobytes())
    if hasattr(ds, "test_x"):
        x = np.ascontiguousarray(ds.test_x)
        h.update(str(x.shape).encode())
        h.update(memoryview(x).cast("B"))
    else:
        h.update(np.ascontiguousarray(ds.test.files).tobytes())
    return h.hexdigest()[:16]


def record(hit1: np.ndarray, hit5: np.ndarray | None, fingerprint: str) -> dict:
    """What a trial stores: n, the packed top-1 (and top-5) hits and the test set's fingerprint."""
    out = {"format": FORMAT, "n": int(len(hit1)), "fingerprint": fingerprint, "top1": pack(hit1)}
    if hit5 is not None:
        out["top5"] = pack(hit5)
    return out


def hits_of(per_image: dict | None, which: str = "top1") -> np.ndarray | None:
    """The boolean hits of a stored record, or None where the record has none (an older store)."""
    if not per_image or which not in per_image:
        return None
    return unpack(per_image[which], int(per_image["n"]))
