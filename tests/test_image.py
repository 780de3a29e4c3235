import numpy as np
import pytest

from screc.hw.gather import descriptor_layout
from screc.sw.golden import QuantTable
from screc.sw.image import (
    DESCRIPTOR_BYTES,
    DESCRIPTOR_FIELDS,
    ImageError,
    TablePlacement,
    build_image,
    descriptor_dtype,
    read_image,
)


def _tables(rng, sizes, dim=32, bits=16):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [QuantTable(f"t{i}", n, dim, 9, rows=rng.integers(lo, hi + 1, (n, dim)))
            for i, n in enumerate(sizes)]


@pytest.mark.parametrize("bits,port", [(16, 64), (8, 128), (16, 32), (18, 64)])
def test_every_row_reads_back_through_its_descriptor(bits, port):
    rng = np.random.default_rng(0)
    tables = _tables(rng, [97, 10, 1], bits=bits)
    places = [TablePlacement(13, 50), TablePlacement(0, 10), TablePlacement(1, 0)]
    image = read_image(build_image(tables, places, bits, port))
    for t, table in enumerate(tables):
        for r in range(table.num_rows):
            assert np.array_equal(image.row(t, r, bits), table.rows[r])
    assert [image.tier_of(0, r) for r in (0, 12, 13, 62, 63, 96)] == [
        "bram", "bram", "dram", "dram", "ssd", "ssd"]


def test_descriptor_has_one_definition_for_software_and_hardware():
    assert descriptor_dtype().itemsize == DESCRIPTOR_BYTES
    layout = descriptor_layout()
    assert layout.size == DESCRIPTOR_BYTES * 8
    offset = 0
    for name, bits in DESCRIPTOR_FIELDS:
        assert layout[name].offset == offset and layout[name].width == bits
        offset += bits


@pytest.fixture
def blob():
    rng = np.random.default_rng(1)
    return build_image(_tables(rng, [20, 5]), [TablePlacement(2, 8), TablePlacement(0, 5)],
                       16, 64)


@pytest.mark.parametrize("corrupt,match", [
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: b[:8] + (9).to_bytes(4, "little") + b[12:], "unsupported version 9"),
    (lambda b: b[:-10], "truncated"),
    (lambda b: b[:300] + bytes([b[300] ^ 0x40]) + b[301:], "checksum mismatch"),
    (lambda b: b[:40], "truncated"),
])
def test_corrupt_images_are_refused_with_the_reason(blob, corrupt, match):
    read_image(blob)
    with pytest.raises(ImageError, match=match):
        read_image(corrupt(blob))


def test_tier_overflow_names_the_tier_and_the_excess(demo_config):
    rng = np.random.default_rng(2)
    tables = _tables(rng, [70000])
    with pytest.raises(ValueError, match=r"tier bram: image needs 4480000 bytes, 285696 more"):
        build_image(tables, [TablePlacement(70000, 0)], 16, 64, demo_config.device)


def test_placement_larger_than_the_table_is_refused():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="does not fit 10 rows"):
        build_image(_tables(rng, [10]), [TablePlacement(6, 6)], 16, 64)
