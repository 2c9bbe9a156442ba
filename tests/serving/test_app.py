"""The HTTP API on a tiny trained run: model info, predictions that equal predict's, and a
4xx JSON error (never a 500 or a hang) for every kind of bad upload."""

import base64
import io
import sys

import numpy as np
import pytest
from PIL import Image

from serving_helpers import encode, png_bomb, wait_ready

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fracture.serving.app import create_app  # noqa: E402
from fracture.serving.settings import Limits, ServeSettings  # noqa: E402

RNG = np.random.default_rng(1)
XRAY = (RNG.normal(90, 40, (120, 90)).clip(0, 255)).astype(np.uint8)


@pytest.fixture(scope="module")
def client(served_run):
    settings = ServeSettings(limits=Limits(max_upload_mb=0.25, max_pixels=4_000_000))
    with TestClient(create_app(served_run, settings)) as client:
        wait_ready(client)
        yield client


def test_health_ready_and_model_info(client, served_run):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True}
    info = client.get("/v1/model").json()
    assert info["classes"] == list(served_run.classes.class_names)
    assert info["input"] == {"size": 48, "resize": served_run.data.resize, "channels": 3}
    import json

    locked = json.loads(served_run.screening_threshold.read_text())
    assert info["screening"]["threshold"] == locked["threshold"] and "valid" in info["screening"]["source"]
    assert info["weights"]["status"] == "finished" and info["weights"]["backbone"] == "small_cnn"
    assert info["exports"] == []
    assert info["model_file"] == "best.keras"
    assert info["test_time_flip"] is None  # a single-box run: the flip option is a detector's


def test_model_info_lists_the_exports_of_the_served_model_file(served_run, tmp_path):
    """A run served with model_file=last.keras lists export.last/'s formats, not export/'s."""
    import dataclasses
    import shutil

    from fracture.inference import Screening
    from fracture.runs import RunLayout
    from fracture.serving.app import model_info

    root = tmp_path / "run"
    shutil.copytree(served_run.run_dir, root, ignore=shutil.ignore_patterns("*.keras", "eval", "predictions", "export*"))
    (root / "export.last" / "saved_model").mkdir(parents=True)
    (root / "export.last" / "saved_model" / "saved_model.pb").write_bytes(b"")
    (root / "export").mkdir()
    (root / "export" / "model_fp32.tflite").write_bytes(b"")
    run = dataclasses.replace(served_run, layout=RunLayout(root))
    info = {f: model_info(dataclasses.replace(run, model_file=f), Screening(None, "none"), ServeSettings())["exports"]
            for f in ("best.keras", "last.keras")}
    assert info == {"best.keras": ["tflite_fp32"], "last.keras": ["saved_model"]}


def test_predict_equals_predict_files_raw_and_multipart(client, served_run, tmp_path):
    from fracture.inference import predict_files

    path = tmp_path / "xray.png"
    Image.fromarray(XRAY).save(path)
    expected = predict_files(served_run, [path], None).predictions[0]
    raw = client.post("/v1/predict", content=path.read_bytes())
    multipart = client.post("/v1/predict", files={"file": ("whatever.bin", path.read_bytes(), "application/octet-stream")})
    for response in (raw, multipart):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predicted_class"] == expected["predicted_class"]
        for name, p in expected["probabilities"].items():
            assert body["probabilities"][name] == pytest.approx(p, abs=1e-4)
        assert body["image"] == {"width": 90, "height": 120, "format": "PNG"}
        assert body["screening"]["decision"] == ("no finding" if expected["no_finding"] else "fracture")
        assert isinstance(body["boxes"], list) and len(body["boxes"]) == (0 if expected["no_finding"] else 1)
        for box in body["boxes"]:
            assert box["box"] == pytest.approx(expected["box"], abs=1e-4) and box["class"] != "no finding"
        assert {"read", "decode", "queue_ms", "model_ms", "batch_size", "total"} <= set(body["timings_ms"])
        assert "overlay_png" not in body


def test_overlay_and_gradcam_are_pngs(client):
    body = client.post("/v1/predict?overlay=true&gradcam=true", content=encode(XRAY, "JPEG")).json()
    for key in ("overlay_png", "gradcam_png"):
        image = Image.open(io.BytesIO(base64.b64decode(body[key])))
        assert image.format == "PNG"
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))).size == (90, 120)


def test_sixteen_bit_and_cmyk_are_decoded_as_predict_does(client, served_run, tmp_path):
    from fracture.inference import predict_files

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(XRAY.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(np.stack([XRAY] * 3, -1)).convert("CMYK").save(cmyk)
    for path in (sixteen, cmyk):
        expected = predict_files(served_run, [path], None).predictions[0]
        response = client.post("/v1/predict", content=path.read_bytes())
        assert response.status_code == 200, response.text
        for name, p in expected["probabilities"].items():
            assert response.json()["probabilities"][name] == pytest.approx(p, abs=1e-4)


def _assert_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_over_the_size_limit_is_413(client):
    big = RNG.integers(0, 255, (400, 400, 3), np.uint8)
    data = encode(big, "PNG")
    assert len(data) > 0.25 * 2**20
    _assert_error(client.post("/v1/predict", content=data), 413, "too_large")
    _assert_error(client.post("/v1/predict", files={"file": ("big.png", data, "image/png")}), 413, "too_large")
    # chunked (no Content-Length): counted while reading
    _assert_error(client.post("/v1/predict", content=iter([data[i:i + 65536] for i in range(0, len(data), 65536)])), 413, "too_large")


def test_not_an_image_is_415_whatever_its_name(client):
    _assert_error(client.post("/v1/predict", files={"file": ("xray.png", b"MZ\x90\x00 an executable", "image/png")}), 415, "not_an_image")
    _assert_error(client.post("/v1/predict", content=b"{\"json\": true}", headers={"content-type": "image/jpeg"}), 415, "not_an_image")
    _assert_error(client.post("/v1/predict", content=encode(XRAY, "TIFF")), 415, "unsupported_tiff")


def test_decompression_bomb_and_pixel_limit_are_422(client):
    _assert_error(client.post("/v1/predict", content=png_bomb()), 422, "too_many_pixels")
    _assert_error(client.post("/v1/predict", content=png_bomb(2100, 2000)), 422, "too_many_pixels")  # over max_pixels=4M


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_422(client, fmt):
    data = encode(RNG.integers(0, 255, (64, 64, 3), np.uint8), fmt)
    _assert_error(client.post("/v1/predict", content=data[: len(data) // 2]), 422, "truncated")


def test_corrupt_image_is_422_and_so_is_a_broken_header(client):
    _assert_error(client.post("/v1/predict", content=b"\xff\xd8\xff\xe0 definitely not a jpeg" * 4), 422, "truncated")
    data = bytearray(encode(XRAY, "PNG"))
    data[60:200] = b"\x00" * 140  # the pixel data, checksum and all, overwritten
    _assert_error(client.post("/v1/predict", content=bytes(data)), 422, "corrupt")


def test_dicom_without_pydicom_is_refused_clearly(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    response = client.post("/v1/predict", content=b"\0" * 128 + b"DICM" + b"\0" * 64)
    _assert_error(response, 415, "unsupported_dicom")
    assert "pydicom" in response.json()["error"]["message"]


def test_dicom_is_decoded_with_pydicom(client):
    pydicom = pytest.importorskip("pydicom", reason="DICOM decoding is optional (pip install pydicom)")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 120, 90, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (XRAY.astype(np.uint16) * 16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = client.post("/v1/predict", content=buffer.getvalue())
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 90, "height": 120, "format": "DICOM"}


def test_empty_body_and_multipart_without_a_file_are_400(client):
    _assert_error(client.post("/v1/predict", content=b""), 400, "empty")
    _assert_error(client.post("/v1/predict", files={"file": ("empty.png", b"", "image/png")}), 400, "empty")
    _assert_error(client.post("/v1/predict", files={"note": (None, "no file")}), 400, "no_file")


def test_a_full_queue_is_503_at_once(served_run):
    from fracture.serving.batcher import Batcher, QueueFull
    from fracture.inference import screening_for

    batcher = Batcher(served_run, screening_for(served_run), queue_size=2)  # not started: nothing drains it
    s = served_run.data.image_size
    batcher.submit(np.zeros((s, s, 3), np.float32), (s, s))
    batcher.submit(np.zeros((s, s, 3), np.float32), (s, s))
    with pytest.raises(QueueFull):
        batcher.submit(np.zeros((s, s, 3), np.float32), (s, s))


def test_concurrent_requests_share_batches(served_run):
    from concurrent.futures import ThreadPoolExecutor

    settings = ServeSettings()
    data = encode(XRAY, "PNG")
    with TestClient(create_app(served_run, settings)) as client:
        wait_ready(client)
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: client.post("/v1/predict", content=data), range(32)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["predicted_class"] for r in responses}) == 1
    assert max(r.json()["timings_ms"]["batch_size"] for r in responses) > 1
