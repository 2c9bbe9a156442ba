"""One list of image files for the project: what is listed is decoded or counted, never passed over."""

import numpy as np
import pytest
from PIL import Image

from conftest import write_yolo_dataset
from fracture.data import images
from fracture.data.config import DataConfig
from fracture.data.index import build_index

BOX = "0 0.5 0.5 0.2 0.2\n"


def _fake_dicom(path):
    """A DICOM Part 10 header: 128-byte preamble, then 'DICM' (enough to be recognised)."""
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00")


@pytest.fixture
def every_format(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.jpg", "b.PNG", "c.bmp", "d.gif", "e.webp", "f.tif", "g.TIFF"):
        Image.fromarray(pixels).save(folder / name)
    Image.fromarray(pixels).save(folder / "tiff_named_jpg.jpg", format="TIFF")
    _fake_dicom(folder / "h.dcm")
    (folder / "notes.txt").write_text("not an image file")
    return folder


def test_listing_finds_tiff_and_dicom_but_not_other_files(every_format):
    names = [p.name for p in images.list_image_files(every_format)]
    assert names == sorted(
        ["a.jpg", "b.PNG", "c.bmp", "d.gif", "e.webp", "f.tif", "g.TIFF", "h.dcm", "tiff_named_jpg.jpg"]
    )
    assert {".tif", ".tiff", ".dcm"} <= set(images.IMAGE_SUFFIXES)


def test_unsupported_reason_agrees_with_the_decoder(every_format):
    """Exactly the listed files without an unsupported reason decode as the pipeline decodes."""
    import tensorflow as tf

    for path in images.list_image_files(every_format):
        reason = images.unsupported_reason(path)
        try:
            tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
            decoded = True
        except tf.errors.InvalidArgumentError:
            decoded = False
        assert decoded == (reason is None), (path.name, reason)
    assert "convert to PNG" in images.unsupported_reason(every_format / "f.tif")
    dicom = images.unsupported_reason(every_format / "h.dcm")
    assert "DICOM" in dicom and "pydicom" in dicom
    assert images.unsupported_status(every_format / "tiff_named_jpg.jpg") == images.UNSUPPORTED_TIFF


def test_dicom_and_tiff_in_a_split_are_counted_as_unsupported(tmp_path):
    root = write_yolo_dataset(tmp_path, ["x"], {"train": {"a": BOX, "b": BOX, "scan": BOX, "film": BOX}})
    image_dir = root / "train" / "images"
    (image_dir / "scan.jpg").unlink()
    _fake_dicom(image_dir / "scan.dcm")
    (image_dir / "film.jpg").unlink()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image_dir / "film.tiff")
    report = build_index(DataConfig(root=str(root), min_instances=1), splits=["train"]).split("train").report
    assert report.images_found == 4 and report.images_used == 2
    assert dict(report.bad_images) == {images.UNSUPPORTED_DICOM: 1, images.UNSUPPORTED_TIFF: 1}
    assert report.accounted() == report.images_found
    assert set(images.UNSUPPORTED_REASONS) <= set(images.SKIP_REASONS)
