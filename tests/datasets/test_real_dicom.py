"""Real DICOM files (the ``pydicom-data`` package: pydicom's own test images, found through
``pydicom.data.get_testdata_file``) through medprobe's DICOM reader and a CSV manifest.

What they cover: computed radiography (CR, MONOCHROME1, 15-bit), CT (signed, rescale to HU),
MR (12-bit, a 10-frame file), ultrasound (RGB, PALETTE COLOR 8- and 16-bit, multi-frame, a
120-frame JPEG cine), nuclear medicine, an enhanced multi-frame CT (rescale and window in the
functional groups), modality- and VOI-LUT sequences, big-endian and compressed (RLE, JPEG 2000)
copies of the same pixels, a legacy file without preamble, and files that cannot be images here
(a segmentation, a truncated file, JPEG lossless without a decoder).

Oracles: the DICOM PS3.3 C.11.2.1.2 window formula and pydicom's own LUT functions applied to
pydicom's decoded arrays; lossless copies (compressed, big-endian, single- vs multi-frame, 8- vs
16- vs 32-bit) must decode to the same image.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom not installed (optional extra medprobe[dicom])")

from medprobe.datasets.dicom import read_dicom  # noqa: E402
from medprobe.datasets.imageio import ImageDecodeError  # noqa: E402


def _file(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom-data is not installed ({name} is one of its files; pip install -e '.[dev]')")
    return path


def _img(name: str) -> np.ndarray:
    return np.asarray(read_dicom(_file(name)))


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear VOI function to 0..255 (the oracle)."""
    return np.round(np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)


#: (file, modality, PIL mode) of distinct real images that decode without extra plugins
DISTINCT = [
    ("RG1_UNCR.dcm", "CR", "L"),
    ("RG3_UNCR.dcm", "CR", "L"),
    ("693_UNCR.dcm", "CT", "L"),
    ("eCT_Supplemental.dcm", "CT", "L"),
    ("MR2_UNCR.dcm", "MR", "L"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR", "L"),
    ("emri_small.dcm", "MR", "L"),
    ("US1_UNCR.dcm", "US", "RGB"),
    ("OBXXXX1A.dcm", "US", "RGB"),
    ("gdcm-US-ALOKA-16.dcm", "US", "RGB"),
    ("color3d_jpeg_baseline.dcm", "US", "RGB"),
    ("JPEG2000_UNC.dcm", "NM", "L"),
    ("OT-PAL-8-face.dcm", "OT", "RGB"),
]


@pytest.mark.parametrize("name, modality, mode", DISTINCT)
def test_real_images_decode_at_their_header_size(name, modality, mode):
    ds = pydicom.dcmread(_file(name), force=True, stop_before_pixels=True)
    image = read_dicom(_file(name))
    assert ds.Modality == modality
    assert image.mode == mode and image.size == (int(ds.Columns), int(ds.Rows))
    arr = np.asarray(image)
    assert arr.std() > 5, f"{name}: decoded to an almost flat image"


def test_ct_rescale_and_window_equal_the_standard():
    ds = pydicom.dcmread(_file("693_UNCR.dcm"))
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(_img("693_UNCR.dcm"), _window(hu, float(ds.WindowCenter), float(ds.WindowWidth)))
    assert ds.PixelRepresentation == 1 and ds.pixel_array.min() < 0  # signed 16-bit storage


def test_monochrome1_radiograph_is_inverted_after_windowing():
    ds = pydicom.dcmread(_file("RG3_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    expect = 255 - _window(ds.pixel_array.astype(float), float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_array_equal(_img("RG3_UNCR.dcm"), expect)


def test_window_agrees_with_pydicom_apply_voi_lut():
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(_file("MR2_UNCR.dcm"))  # 12-bit MR with rescale 3.77 and window 1000/2000
    values = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ours = _img("MR2_UNCR.dcm").astype(float)
    np.testing.assert_array_equal(ours, _window(values, float(ds.WindowCenter), float(ds.WindowWidth)))
    theirs = np.asarray(apply_voi_lut(values, ds), dtype=float)  # pydicom's windowing, in its own output range
    theirs = (theirs - theirs.min()) / (theirs.max() - theirs.min()) * 255
    assert np.abs(ours - theirs).max() <= 1.0


def test_multiple_windows_use_the_first_pair():
    ds = pydicom.dcmread(_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert len(ds.WindowCenter) == 2
    expect = _window(ds.pixel_array.astype(float), float(ds.WindowCenter[0]), float(ds.WindowWidth[0]))
    np.testing.assert_array_equal(_img("MR-SIEMENS-DICOM-WithOverlays.dcm"), expect)


def test_enhanced_ct_takes_rescale_and_window_from_the_functional_groups():
    ds = pydicom.dcmread(_file("eCT_Supplemental.dcm"))
    assert "RescaleIntercept" not in ds and "WindowCenter" not in ds and int(ds.NumberOfFrames) == 2
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt, voi = shared.PixelValueTransformationSequence[0], shared.FrameVOILUTSequence[0]
    hu = ds.pixel_array[0].astype(float) * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_array_equal(_img("eCT_Supplemental.dcm"), _window(hu, float(voi.WindowCenter), float(voi.WindowWidth)))


def test_modality_lut_and_voi_lut_sequences_are_applied():
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(_file("mlut_18.dcm"))
    m = apply_modality_lut(ds.pixel_array, ds).astype(float)
    expect = np.round((m - m.min()) / (m.max() - m.min()) * 255)
    np.testing.assert_array_equal(_img("mlut_18.dcm"), expect)
    assert ds.pixel_array.min() < 0 <= m.min()  # the LUT maps signed stored values to its unsigned output

    ds = pydicom.dcmread(_file("vlut_04.dcm"))
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expect = np.round(apply_voi_lut(ds.pixel_array, ds).astype(float) / (2**bits - 1) * 255)
    np.testing.assert_array_equal(_img("vlut_04.dcm"), expect)


def test_16_and_32_bit_colour_scale_to_the_8_bit_image():
    ref = _img("SC_rgb.dcm")
    for name in ("SC_rgb_16bit.dcm", "SC_rgb_32bit.dcm"):
        ds = pydicom.dcmread(_file(name))
        assert ds.BitsStored in (16, 32) and ds.pixel_array.max() > 255
        np.testing.assert_array_equal(_img(name), ref, err_msg=name)


def test_16_bit_grey_without_window_uses_the_data_range():
    ds = pydicom.dcmread(_file("JPEG2000_UNC.dcm"))  # NM, 16 bits stored, no window in the header
    a = ds.pixel_array.astype(float)
    np.testing.assert_array_equal(_img("JPEG2000_UNC.dcm"), np.round((a - a.min()) / (a.max() - a.min()) * 255))


@pytest.mark.parametrize(
    "copy, original",
    [
        ("emri_small_big_endian.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("US1_J2KR.dcm", "US1_UNCR.dcm"),
        ("SC_rgb_expb_16bit.dcm", "SC_rgb_16bit.dcm"),
        ("SC_ybr_full_uncompressed.dcm", "SC_rgb.dcm"),
        ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),
        ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"),  # big-endian palette (pydicom reads it byte-swapped)
        ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"),
    ],
)
def test_lossless_copies_decode_to_the_same_image(copy, original):
    a, b = _img(copy), _img(original)
    if "ybr" in copy:  # YCbCr -> RGB of 8-bit values rounds by a few levels
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 8
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "multi, single",
    [("OBXXXX1A_2frame.dcm", "OBXXXX1A.dcm"), ("SC_rgb_2frame.dcm", "SC_rgb.dcm"),
     ("SC_rgb_16bit_2frame.dcm", "SC_rgb_16bit.dcm"), ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A.dcm")],
)
def test_multi_frame_files_use_frame_zero(multi, single):
    assert int(pydicom.dcmread(_file(multi), stop_before_pixels=True).NumberOfFrames) == 2
    np.testing.assert_array_equal(_img(multi), _img(single))


def test_multi_frame_volume_frame_zero_and_long_cine():
    ds = pydicom.dcmread(_file("emri_small.dcm"))
    frames = ds.pixel_array.astype(float)
    assert frames.shape == (10, 64, 64) and not np.array_equal(frames[0], frames[5])
    f0 = frames[0]
    np.testing.assert_array_equal(_img("emri_small.dcm"), np.round((f0 - f0.min()) / (f0.max() - f0.min()) * 255))
    # a 120-frame JPEG cine: only frame 0 is decoded, and it is the first frame of the loop
    from pydicom.pixels import pixel_array

    cine = _file("color3d_jpeg_baseline.dcm")
    assert int(pydicom.dcmread(cine, stop_before_pixels=True).NumberOfFrames) == 120
    np.testing.assert_array_equal(_img("color3d_jpeg_baseline.dcm"), pixel_array(cine, index=0))


def test_palette_colour_goes_through_its_palette():
    from pydicom.pixels import apply_color_lut

    for name in ("OBXXXX1A.dcm", "gdcm-US-ALOKA-16.dcm"):
        ds = pydicom.dcmread(_file(name))
        assert ds.PhotometricInterpretation == "PALETTE COLOR"
        rgb = apply_color_lut(ds.pixel_array, ds).astype(float)  # 16-bit palette entries
        np.testing.assert_array_equal(_img(name), np.round(rgb * 255 / 65535), err_msg=name)


def test_legacy_file_without_preamble_is_read():
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(_file("OT-PAL-8-face.dcm"))
    image = read_dicom(_file("OT-PAL-8-face.dcm"))
    assert image.mode == "RGB" and image.size == (640, 480)


def _has_jpeg_lossless_decoder() -> bool:
    from pydicom.pixels.decoders import JPEGLosslessSV1Decoder

    return JPEGLosslessSV1Decoder.is_available


def test_files_that_are_no_image_here_fail_with_one_reason():
    with pytest.raises(ImageDecodeError, match="Segmentation"):
        read_dicom(_file("liver.dcm"))
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        read_dicom(_file("emri_small_jpeg_2k_lossless_too_short.dcm"))
    if not _has_jpeg_lossless_decoder():
        with pytest.raises(ImageDecodeError, match=r"transfer syntax 1\.2\.840\.10008\.1\.2\.4\.70\) JPEG Lossless.*pylibjpeg") as err:
            read_dicom(_file("JPEG-LL.dcm"))
        assert "\n" not in str(err.value)  # one line, though pydicom's reason spans several


def test_csv_manifest_over_real_dicom(tmp_path):
    from medprobe.api import dataset

    rows = [
        ("RG1_UNCR.dcm", "xray", "train", "p1"), ("RG3_UNCR.dcm", "xray", "test", "p2"),
        ("693_UNCR.dcm", "ct", "train", "p3"), ("eCT_Supplemental.dcm", "ct", "test", "p4"),
        ("MR2_UNCR.dcm", "mr", "train", "p5"), ("emri_small.dcm", "mr", "val", "p6"),
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", "mr", "test", "p7"),
        ("US1_UNCR.dcm", "us", "train", "p8"), ("OBXXXX1A_2frame.dcm", "us", "val", "p9"),
        ("gdcm-US-ALOKA-16.dcm", "us", "test", "p10"), ("JPEG2000_UNC.dcm", "nm", "train", "p11"),
        ("liver.dcm", "ct", "train", "p12"),  # a segmentation: a bad sample, never an image
    ]
    images = tmp_path / "images"
    images.mkdir()
    for name, *_ in rows:
        shutil.copy(_file(name), images / name)
    lines = ["path,label,split,patient_id"] + [f"images/{n},{lab},{s},{p}" for n, lab, s, p in rows]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")

    from medprobe.datasets.errors import BadSamplesError

    spec = f"csv:{tmp_path / 'manifest.csv'}"
    with pytest.raises(BadSamplesError, match=r"liver\.dcm: is a DICOM Segmentation"):
        dataset(spec)  # a bad sample is an error unless asked to skip it
    ds = dataset(spec, skip_bad=True)
    assert ds.classes == ["ct", "mr", "nm", "us", "xray"] and not getattr(ds, "synthetic", False)
    assert [(b.id, "Segmentation" in b.reason) for b in ds.skipped] == [("images/liver.dcm", True)]
    decoded = {s.id: ds.read(s) for s in ds.samples}
    assert len(decoded) == 11
    assert {v.mode for v in decoded.values()} == {"L", "RGB"}
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    np.testing.assert_array_equal(np.asarray(decoded["images/OBXXXX1A_2frame.dcm"]), _img("OBXXXX1A.dcm"))
    np.testing.assert_array_equal(np.asarray(decoded["images/693_UNCR.dcm"]), _img("693_UNCR.dcm"))
