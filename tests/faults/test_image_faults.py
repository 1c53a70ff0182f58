"""Fault corpus rows 1-15: broken, odd and huge image files.

Each bad file ends in exit status 2 and one ``Error:`` block naming the file and the reason (or,
for odd but valid formats, in the right pixel values); the dataset folder is never written to.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faultkit import dicom, image_folder, jpeg_bytes, noise, png, png16, png_bomb, png_bytes, png_header_only, tiff48
from medprobe.datasets import open_dataset
from medprobe.datasets.imageio import read_image, to_rgb


def _bad_file(medprobe, unchanged, root, name, reason):
    """``datasets show`` on ``root`` fails with status 2 naming ``root/a/name`` and ``reason``."""
    with unchanged(root):
        result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 2, result
    assert result.err.startswith(f"Error: 1 bad sample(s) in dataset 'imagefolder:{root}")
    assert "(pass --skip-bad / skip_bad=True to skip and record them)" in result.err
    line = next((l for l in result.err.splitlines() if l.startswith(f"  - {root / 'a' / name}: ")), None)
    assert line is not None and line.startswith(f"  - {root / 'a' / name}: {reason}"), result.err
    assert "Traceback" not in result.err and result.out == ""
    return result


def test_row01_truncated_jpeg(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    data = jpeg_bytes()
    (root / "a" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    _bad_file(medprobe, unchanged, root, "trunc.jpg", "truncated image data: ")


def test_row02_truncated_png(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    data = png_bytes(noise(64, 64))
    (root / "a" / "trunc.png").write_bytes(data[: len(data) // 2])
    result = _bad_file(medprobe, unchanged, root, "trunc.png", "truncated image data: ")
    assert "1 bad sample(s)" in result.err


def test_row03_zero_byte_file(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    (root / "a" / "zero.png").write_bytes(b"")
    _bad_file(medprobe, unchanged, root, "zero.png", "empty file (0 bytes)")


def test_row04_one_pixel_image(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    png(root / "a" / "dot.png", np.zeros((1, 1), np.uint8))
    _bad_file(medprobe, unchanged, root, "dot.png", "image is 1x1 px, smaller than the 8 px minimum side")


def test_row05_text_named_png(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    (root / "a" / "notes.png").write_text("radiologist notes saved with the wrong extension\n")
    _bad_file(medprobe, unchanged, root, "notes.png",
              "not an image: Pillow cannot identify the file format (49 bytes, extension '.png')")


def test_row06_huge_header_is_refused_before_decoding(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    png_header_only(root / "a" / "huge.png", 20000, 20000)
    _bad_file(medprobe, unchanged, root, "huge.png",
              "image has 400 Mpx, above the 64 Mpx limit and Pillow's decompression-bomb limit "
              "(a decompression bomb or a huge scan; set MEDPROBE_MAX_PIXELS to read larger images; "
              "Pillow's is PIL.Image.MAX_IMAGE_PIXELS)")


def test_row07_pixel_bomb_is_refused_by_the_documented_limit(tmp_path, medprobe, unchanged, monkeypatch):
    root = image_folder(tmp_path / "img")
    bomb = png_bomb(root / "a" / "bomb.png")  # 10000 x 10000, a valid PNG of about 97 KB
    assert bomb.stat().st_size < 200_000
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's own warning (above 89 Mpx) may show too
        _bad_file(medprobe, unchanged, root, "bomb.png",
                  "image is 10000x10000 px (100 Mpx), above the 64 Mpx limit "
                  "(a decompression bomb or a huge scan; set MEDPROBE_MAX_PIXELS to read larger images)")
    # the limit is configurable: a 40 x 30 image is refused under a 1000-pixel limit, accepted without it
    small = tmp_path / "small"
    image_folder(small)
    png(small / "a" / "wide.png", noise(40, 30))
    monkeypatch.setenv("MEDPROBE_MAX_PIXELS", "1000")
    _bad_file(medprobe, unchanged, small, "wide.png",
              "image is 40x30 px (0.0012 Mpx), above the 0.001 Mpx limit "
              "(a decompression bomb or a huge scan; set MEDPROBE_MAX_PIXELS to read larger images)")
    monkeypatch.setenv("MEDPROBE_MAX_PIXELS", "lots")
    result = medprobe("datasets", "show", f"imagefolder:{small}")
    assert result.code == 2 and result.err.strip() == (
        "Error: MEDPROBE_MAX_PIXELS='lots' is not a positive number of pixels (e.g. 100000000)")
    monkeypatch.delenv("MEDPROBE_MAX_PIXELS")
    assert medprobe("datasets", "show", f"imagefolder:{small}").code == 0


def test_row08_16bit_grey_png_with_12bit_data_is_divided_by_4095(tmp_path, medprobe):
    root = image_folder(tmp_path / "img")
    Image.fromarray(np.full((12, 16), 4000, np.uint16)).save(root / "a" / "xray12.png")
    result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 0 and "I;16 (1)" in result.out
    ds = open_dataset(f"imagefolder:{root}")
    sample = next(s for s in ds.samples if s.id == "a/xray12.png")
    assert np.asarray(ds.load_image(sample))[0, 0].tolist() == [249, 249, 249]  # round(4000 / 4095 * 255)


def test_row09_48bit_rgb_png_with_12bit_data_keeps_its_full_depth(tmp_path, medprobe):
    root = image_folder(tmp_path / "img")
    rgb = np.zeros((12, 16, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 4000, 2000, 1000
    rgb[0, 1] = (4095, 0, 2048)
    png16(root / "a" / "rgb48.png", rgb)
    result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 0 and "RGB;16 (1)" in result.out
    ds = open_dataset(f"imagefolder:{root}")
    out = np.asarray(ds.load_image(next(s for s in ds.samples if s.id == "a/rgb48.png")))
    assert out[0, 0].tolist() == [249, 125, 62]  # not the low byte (15, 7, 3)
    assert out[0, 1].tolist() == [255, 0, 128]
    # an sBIT chunk saying 12 bits gives the same scale; RGBA and grey + alpha 16-bit likewise
    png16(tmp_path / "s.png", rgb, sbit=bytes([12, 12, 12]))
    assert np.asarray(to_rgb(read_image(tmp_path / "s.png")))[0, 0].tolist() == [249, 125, 62]
    rgba = np.dstack([rgb, np.full((12, 16), 65535, np.uint16)])
    png16(tmp_path / "rgba.png", rgba)
    assert np.asarray(to_rgb(read_image(tmp_path / "rgba.png")))[0, 0].tolist() == [249, 125, 62]
    la = np.dstack([np.full((12, 16), 4000, np.uint16), np.full((12, 16), 65535, np.uint16)])
    png16(tmp_path / "la.png", la)
    assert np.asarray(to_rgb(read_image(tmp_path / "la.png")))[0, 0].tolist() == [249, 249, 249]
    for order in "<>":  # 48-bit TIFF, both byte orders
        tif = tiff48(tmp_path / f"rgb48{'le' if order == '<' else 'be'}.tif", rgb, order)
        img = read_image(tif)
        assert img.info["source_mode"] == "RGB;16" and np.asarray(to_rgb(img))[0, 0].tolist() == [249, 125, 62]


def test_row10_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[...] = (200, 100, 50, 128)
    png(tmp_path / "a.png", rgba)
    assert np.asarray(to_rgb(read_image(tmp_path / "a.png")))[0, 0].tolist() == [100, 50, 25]


def test_row11_palette_with_transparency(tmp_path):
    img = Image.new("P", (10, 10))
    img.putpalette([255, 255, 255, 0, 255, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 5, 10))
    img.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(to_rgb(read_image(tmp_path / "p.png")))
    assert out[0, 0].tolist() == [0, 255, 0] and out[0, 9].tolist() == [0, 0, 0]  # transparent white -> black


def test_row12_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    out = np.asarray(to_rgb(read_image(tmp_path / "c.jpg")))
    assert np.abs(out[5, 5].astype(int) - [255, 0, 0]).max() <= 8


@pytest.fixture
def pydicom_module():
    return pytest.importorskip("pydicom", reason="pydicom not installed (optional extra medprobe[dicom])")


def test_row13_truncated_dicom_pixel_data(tmp_path, medprobe, unchanged, pydicom_module):
    root = image_folder(tmp_path / "img")
    path = dicom(root / "a" / "ct.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    result = _bad_file(medprobe, unchanged, root, "ct.dcm", "cannot decode DICOM pixel data (transfer syntax 1.2.840.10008.1.2.1)")
    assert "ct.dcm: cannot decode DICOM pixel data" in result.err


def test_row14_dicom_without_pixel_data(tmp_path, medprobe, unchanged, pydicom_module):
    root = image_folder(tmp_path / "img")
    dicom(root / "a" / "nopix.dcm", with_pixels=False)
    _bad_file(medprobe, unchanged, root, "nopix.dcm", "DICOM file has no pixel data")


def test_row15_garbage_after_the_dicm_magic(tmp_path, medprobe, unchanged, pydicom_module):
    root = image_folder(tmp_path / "img")
    (root / "a" / "IM0001").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4)
    # found by the magic (no extension); pydicom skips the garbage, so no pixel data is left
    _bad_file(medprobe, unchanged, root, "IM0001", "DICOM file has no pixel data")
    (root / "a" / "IM0001").unlink()
    (root / "a" / "head.dcm").write_bytes(b"\x00" * 140)  # no DICM magic and no valid header
    _bad_file(medprobe, unchanged, root, "head.dcm", "not a readable DICOM file: ")
