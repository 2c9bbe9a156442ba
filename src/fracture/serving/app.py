"""The HTTP app: `create_app(run, settings)`.

    GET  /              the page (static HTML + JS, no build step, no CDN)
    GET  /health        the process answers
    GET  /ready         200 once the model is loaded and warmed up, else 503
    GET  /v1/model      classes, input size, the locked screening threshold, weights
                        provenance (run.json), export formats present
    POST /v1/predict    raw image bytes or a multipart upload (field `file`);
                        `?overlay=true` adds a PNG with the boxes, `&gradcam=true` a Grad-CAM panel

Every bad upload is a 4xx JSON error `{"error": {"code", "message"}}` (fracture.serving.uploads).
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fracture.inference import Screening, decode_config, render_overlay, screening_for
from fracture.runs import read_run_info
from fracture.serving.batcher import Batcher, QueueFull
from fracture.serving.settings import ServeSettings
from fracture.serving.uploads import ByteLimit, UploadError, check_content_length, decode_upload

STATIC = Path(__file__).parent / "static"
PROVENANCE_KEYS = ("status", "started", "backbone", "weights_requested", "weights_used", "precision",
                   "train_images", "val_images", "train_seconds")


def export_formats(export_dir: Path) -> list[str]:
    """The export formats present in a run's export folder (of the served model file)."""
    found = []
    if (export_dir / "saved_model" / "saved_model.pb").is_file():
        found.append("saved_model")
    found += sorted(f"tflite_{p.stem.removeprefix('model_')}" for p in export_dir.glob("model_*.tflite"))
    if (export_dir / "model.onnx").is_file():
        found.append("onnx")
    return found


def model_info(run, screening: Screening, settings: ServeSettings) -> dict:
    info = read_run_info(run.run_dir)
    return {
        "run": str(run.run_dir),
        "model_file": run.model_file,
        "classes": list(run.classes.class_names),
        "negative_class": None if run.classes.negative_id is None else run.classes.class_names[run.classes.negative_id],
        "input": {"size": run.data.image_size, "resize": run.data.resize, "channels": 3},
        "screening": {"threshold": screening.threshold, "source": screening.source},
        "test_time_flip": decode_config(run).test_time_flip if run.is_detector else None,
        "weights": {k: info.get(k) for k in PROVENANCE_KEYS},
        "exports": export_formats(run.layout.export_dir(run.model_file)),
        "limits": {"max_upload_bytes": settings.limits.max_upload_bytes, "max_pixels": _max_pixels(run, settings)},
    }


def _max_pixels(run, settings: ServeSettings) -> int:
    return int(settings.limits.max_pixels or run.data.max_image_pixels)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(UploadError(status, code, message).as_dict(), status_code=status)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` (the declared length is
    checked first), or (408) when it takes longer than `timeout` to arrive."""
    check_content_length(request.headers.get("content-length"), limit)
    body = ByteLimit(limit)

    async def pull():
        async for chunk in request.stream():
            body.add(chunk)

    try:
        await asyncio.wait_for(pull(), timeout)
    except asyncio.TimeoutError:
        raise UploadError(408, "timeout", f"the upload did not arrive within {timeout:g} s") from None
    return body.body()


async def upload_bytes(request: Request, body: bytes) -> bytes:
    """The image bytes: the first file of a multipart form, else the raw body."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return body
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as exc:  # noqa: BLE001 - starlette's multipart errors are the client's
        raise UploadError(400, "bad_multipart", f"malformed multipart upload ({exc})") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise UploadError(400, "no_file", "multipart upload without a file: send the image in a field named 'file'")
        return await files[0].read()
    finally:
        await form.close()


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(run, settings: ServeSettings | None = None, screening: Screening | None = None) -> FastAPI:
    """The app for a loaded run (`fracture.runs.load_run`: the model is loaded in safe mode).

    The model is warmed up on every batch shape in the batcher's thread when the app starts;
    /ready says yes only then.
    """
    settings = settings or ServeSettings()
    screening = screening or screening_for(run, settings.threshold, settings.box_confidence)
    max_pixels = _max_pixels(run, settings)
    b = settings.batching
    batcher = Batcher(run, screening, b.max_batch, b.max_wait_ms, b.queue_size)
    gradcam_lock = threading.Lock()
    gradcam: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await run_in_threadpool(batcher.stop)

    app = FastAPI(title="fracture", description="Bone-fracture model server (research tool, not a medical device)",
                  lifespan=lifespan)
    app.state.batcher, app.state.run, app.state.settings = batcher, run, settings
    info = model_info(run, screening, settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse(exc.as_dict(), status_code=exc.status)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if batcher.error is not None:
            return JSONResponse({"ready": False, "reason": f"warm-up failed: {type(batcher.error).__name__}: {batcher.error}"}, 503)
        if not batcher.ready.is_set():
            return JSONResponse({"ready": False, "reason": "loading and warming up the model"}, 503)
        return {"ready": True}

    @app.get("/v1/model")
    async def model():
        return info

    @app.post("/v1/predict")
    async def predict(request: Request, overlay: bool = False, gradcam: bool = False):
        start = time.perf_counter()
        if not batcher.ready.is_set():
            return _error(503, "not_ready", "the model is still warming up: retry when /ready says yes")
        body = await read_body(request, settings.limits.max_upload_bytes, settings.limits.read_timeout_s)
        data = await upload_bytes(request, body)
        read_done = time.perf_counter()
        decoded = await run_in_threadpool(decode_upload, data, run.data.image_size, run.data.resize, max_pixels)
        decode_done = time.perf_counter()
        try:
            future = batcher.submit(decoded.model_input, decoded.raw.shape[:2])
        except QueueFull as exc:
            return _error(503, "busy", str(exc))
        try:
            record, timings = await asyncio.wait_for(asyncio.wrap_future(future), b.timeout_s)
        except asyncio.TimeoutError:
            return _error(503, "timeout", f"no answer within {b.timeout_s:g} s: the server is overloaded")
        response = response_of(record, screening, decoded.format, info["negative_class"])
        if overlay:
            response["overlay_png"] = await run_in_threadpool(lambda: _png_base64(render_overlay(decoded.raw, record)))
        if overlay and gradcam and settings.gradcam:
            response["gradcam_png"] = await run_in_threadpool(_gradcam_panel, decoded.model_input, record)
        response["timings_ms"] = {
            "read": round((read_done - start) * 1000, 2),
            "decode": round((decode_done - read_done) * 1000, 2),
            **timings,
            "total": round((time.perf_counter() - start) * 1000, 2),
        }
        return response

    def _gradcam_panel(model_input, record) -> str:
        import tempfile

        import numpy as np

        from fracture.evaluation.figures import explanation_panel
        from fracture.evaluation.gradcam import GradCam

        with gradcam_lock:
            explainer = gradcam.setdefault("explainer", GradCam(run.model))
            heatmaps, _ = explainer(model_input[None])
            attention = explainer.attention(model_input[None])
            with tempfile.TemporaryDirectory() as tmp:
                path = explanation_panel(
                    model_input, None, np.asarray(record["model_box"]), heatmaps[0],
                    None if attention is None else attention[0],
                    f"{record['predicted_class']} {record['probability']:.2f}", Path(tmp) / "gradcam.png",
                )
                return base64.b64encode(path.read_bytes()).decode("ascii")

    return app


def response_of(record: dict, screening: Screening, image_format: str, negative_class: str | None) -> dict:
    """The /v1/predict JSON for one record of `fracture.inference.predict_batch`."""
    decision = "no finding" if record["no_finding"] else "fracture"
    return {
        "predicted_class": record["predicted_class"],
        "probability": round(record["probability"], 5),
        "probabilities": {k: round(v, 5) for k, v in record["probabilities"].items()},
        "screening": {
            "decision": decision,
            "score": record.get("screening", {}).get("score"),
            "threshold": screening.threshold,
            "threshold_source": screening.source,
            "rule": (f"fracture when 1 - p({negative_class}) >= threshold" if negative_class and screening.threshold is not None
                     else "the most probable class decides"),
        },
        "boxes": record["boxes"],
        "image": {"width": record["width"], "height": record["height"], "format": image_format},
    }
