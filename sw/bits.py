"""Bit packing shared by the image builder, the boot-stream builder and the benches: fields
listed least significant first, and Amaranth layouts, turned into integers."""

import numpy as np

__all__ = ["pack_fields", "unpack_fields", "pack_columns", "lane_words"]


def pack_fields(fields, values: dict) -> int:
    """``fields``: ``(name, bits)`` pairs, least significant first; a missing value is 0, a
    value that does not fit raises an error naming the field."""
    word, offset = 0, 0
    for name, bits in fields:
        v = int(values.get(name, 0))
        if not 0 <= v < (1 << bits):
            raise ValueError(f"field {name} = {v} does not fit {bits} bits")
        word |= v << offset
        offset += bits
    return word


def unpack_fields(fields, word: int) -> dict:
    out, offset = {}, 0
    for name, bits in fields:
        out[name] = (word >> offset) & ((1 << bits) - 1)
        offset += bits
    return out


def pack_columns(layout, columns: dict) -> list[int]:
    """Many transfers of an Amaranth layout: ``columns`` maps each field to an array (signed
    values are wrapped to the field's width)."""
    from amaranth.lib import data

    layout = data.Layout.cast(layout)
    n = len(next(iter(columns.values())))
    if layout.size <= 64:
        word = np.zeros(n, dtype=np.uint64)
        for name, field in layout:
            mask = np.uint64((1 << field.width) - 1)
            col = np.asarray(columns[name], dtype=np.int64).astype(np.uint64) & mask
            word |= col << np.uint64(field.offset)
        return [int(w) for w in word]
    words = [0] * n
    for name, field in layout:
        mask = (1 << field.width) - 1
        for k, v in enumerate(np.asarray(columns[name]).tolist()):
            words[k] |= (int(v) & mask) << field.offset
    return words


def lane_words(values, bits: int) -> list[int]:
    """Rows of lane values -> one integer per row, lane 0 least significant, each ``bits``
    wide (two's complement)."""
    mask = (1 << bits) - 1
    return [sum((int(v) & mask) << (bits * i) for i, v in enumerate(row)) for row in values]
