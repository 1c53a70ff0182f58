"""Pixel-format conversion: every mode comes out as 8-bit RGB with the right values."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from ds_make import write_dicom
from medprobe.datasets import BadSamplesError, open_dataset
from medprobe.datasets.imageio import ImageDecodeError, bit_range, read_image, to_rgb


def _rgb(path):
    img = to_rgb(read_image(path))
    assert img.mode == "RGB"
    return np.asarray(img)


def test_grayscale_is_replicated_into_three_equal_channels(tmp_path):
    arr = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(arr).save(tmp_path / "g.png")
    out = _rgb(tmp_path / "g.png")
    assert out.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], arr)


def test_palette_image_uses_its_palette(tmp_path):
    img = Image.new("P", (10, 10))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.paste(1, (0, 0, 5, 10))
    img.paste(2, (5, 0, 10, 10))
    img.save(tmp_path / "p.png")
    out = _rgb(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 9]) == (0, 0, 255)


def test_palette_transparency_and_rgba_are_composited_on_black(tmp_path):
    img = Image.new("P", (10, 10))
    img.putpalette([255, 255, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 5, 10))
    img.save(tmp_path / "pt.png", transparency=0)
    out = _rgb(tmp_path / "pt.png")
    assert tuple(out[0, 0]) == (0, 255, 0) and tuple(out[0, 9]) == (0, 0, 0)

    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png")
    assert np.allclose(out[0, 0], (100, 50, 25), atol=1)

    la = Image.fromarray(np.dstack([np.full((10, 10), 200, np.uint8), np.full((10, 10), 64, np.uint8)]), mode="LA")
    la.save(tmp_path / "la.png")
    assert np.allclose(_rgb(tmp_path / "la.png")[0, 0], 50, atol=1)


def test_16bit_png_with_12bit_data_is_scaled_by_its_bit_range_not_clipped(tmp_path):
    arr = np.array([[0, 1024, 2048, 4095]] * 8, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "xray12.png")
    raw = read_image(tmp_path / "xray12.png")
    assert raw.mode == "I;16"
    out = _rgb(tmp_path / "xray12.png")[0, :, 0]
    assert list(out) == [0, 64, 128, 255]  # divided by 4095, not by 255 (which would saturate)


def test_16bit_png_full_range_and_sbit_chunk(tmp_path):
    full = np.array([[0, 32768, 65535, 100]] * 8, dtype=np.uint16)
    Image.fromarray(full).save(tmp_path / "full.png")
    assert list(_rgb(tmp_path / "full.png")[0, :, 0]) == [0, 128, 255, 0]

    # sBIT says 12 significant bits although the largest value (600) fits in 10
    dim = np.array([[0, 600, 300, 10]] * 8, dtype=np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    Image.fromarray(dim).save(tmp_path / "sbit.png", pnginfo=info)
    assert read_image(tmp_path / "sbit.png").info["significant_bits"] == 12
    assert list(_rgb(tmp_path / "sbit.png")[0, :2, 0]) == [0, round(600 / 4095 * 255)]
    Image.fromarray(dim).save(tmp_path / "nosbit.png")
    assert list(_rgb(tmp_path / "nosbit.png")[0, :2, 0]) == [0, round(600 / 1023 * 255)]


def test_bit_range_rounds_up_to_even_depths():
    assert [bit_range(v) for v in (0, 255, 256, 1023, 1024, 4095, 4096, 65535)] == [8, 8, 10, 10, 12, 12, 14, 16]


def test_16bit_and_float_tiff(tmp_path):
    arr = np.array([[0, 8192, 16383, 4000]] * 8, dtype=np.uint16)  # 14-bit data
    Image.fromarray(arr).save(tmp_path / "x.tif")
    assert read_image(tmp_path / "x.tif").mode.startswith("I;16")
    assert list(_rgb(tmp_path / "x.tif")[0, :3, 0]) == [0, 128, 255]

    unit = np.array([[0.0, 0.5, 1.0, 0.25]] * 8, dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    assert list(_rgb(tmp_path / "unit.tif")[0, :, 1]) == [0, 128, 255, 64]

    hu = np.array([[-100.0, 60.0, 300.0, 0.0]] * 8, dtype=np.float32)
    Image.fromarray(hu).save(tmp_path / "hu.tif")
    assert list(_rgb(tmp_path / "hu.tif")[0, :, 2]) == [0, 102, 255, 64]  # min-max over -100..300


def test_bilevel_and_cmyk(tmp_path):
    Image.fromarray(np.eye(10, dtype=bool)).save(tmp_path / "b.png")
    out = _rgb(tmp_path / "b.png")
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 0
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert np.allclose(_rgb(tmp_path / "c.jpg")[5, 5], (255, 0, 0), atol=8)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"this is plain text, not a picture", "not an image"),
    ],
)
def test_unreadable_files_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=re.escape(reason)):
        read_image(path)




@pytest.fixture
def pydicom_module():
    return pytest.importorskip("pydicom", reason="pydicom not installed (optional extra medprobe[dicom])")


def test_dicom_rescale_window_and_monochrome1(tmp_path, pydicom_module):
    stored = np.array([[0, 1000, 1064, 1100, 1200, 1500, 2000, 4000]] * 8, dtype=np.uint16)
    # HU = stored - 1024; soft-tissue window centre 40, width 400 (linear, PS3.3 C.11.2.1.2)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=1, intercept=-1024, center=40, width=400)
    out = _rgb(path)[0, :, 0]
    hu = stored[0].astype(float) - 1024
    expected = np.round(np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(out, expected)
    assert out[2] == 128  # HU 40 = window centre

    inverted = write_dicom(tmp_path / "m1.dcm", stored, slope=1, intercept=-1024, center=40, width=400, photometric="MONOCHROME1")
    np.testing.assert_array_equal(_rgb(inverted)[0, :, 0], 255 - expected)

    multi = write_dicom(tmp_path / "mv.dcm", stored, slope=2, intercept=0, center=[2000, 500], width=[1000, 100])
    values = stored[0].astype(float) * 2
    np.testing.assert_array_equal(_rgb(multi)[0, :, 0], np.round(np.clip((values - 1999.5) / 999 + 0.5, 0, 1) * 255))

    plain = write_dicom(tmp_path / "nowin.dcm", stored)
    out = _rgb(plain)[0, :, 0]
    assert out[0] == 0 and out[-1] == 255  # no window in the header: the data's min..max


def test_dicom_files_in_a_folder_dataset_including_extensionless(tmp_path, pydicom_module):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(3):
            write_dicom(tmp_path / cls / f"s{i}.dcm", rng.integers(0, 3000, (16, 16)), intercept=-1024, slope=1, center=40, width=400)
    write_dicom(tmp_path / "a" / "IM000123", rng.integers(0, 3000, (16, 16)))  # no extension: found by the DICM magic
    (tmp_path / "b" / "broken.dcm").write_bytes(b"\x00" * 140)
    with pytest.raises(BadSamplesError, match=r"broken\.dcm: not a readable DICOM file"):
        open_dataset(f"imagefolder:{tmp_path}")
    ds = open_dataset(f"imagefolder:{tmp_path}", skip_bad=True)
    assert len(ds) == 7 and ds.info()["image_modes"] == {"L": 7}
    assert {s.id for s in ds.samples} >= {"a/IM000123", "a/s0.dcm"}
    assert ds.load_image(ds.samples[0]).mode == "RGB"


def test_multi_frame_tiff_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((10, 10), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    assert _rgb(tmp_path / "stack.tif")[0, 0, 0] == 10


def test_dicom_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "IM0001"  # extension-less, recognised by the DICM magic at byte 128
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if the optional extra were missing
    with pytest.raises(ImageDecodeError, match=re.escape("is a DICOM file but pydicom is not installed (pip install 'medprobe[dicom]')")):
        read_image(path)
