"""A small FastAPI app: one hand-written page and a JSON API over the same predict
functions as the CLI.

Safety: the photo is read from the request body into memory (never a temporary file),
with a size limit checked while streaming and a time limit for the whole body (a slow
client cannot hold the server); its content is sniffed by decoding it with the photo
formats' decoders only (data/images.PHOTO_FORMATS), never trusted by name or header;
decompression bombs are refused; only the decoded pixels are used and nothing of the
original file (EXIF, GPS included) is returned or kept; nothing in a request names a file
path. Requests whose Host header is not allowed (loopback names by default) are refused:
a web page elsewhere cannot reach this server through DNS rebinding. No Swagger UI: it
loads its scripts from a CDN; /openapi.json describes the API. Predictions run one at a
time on one model thread: Grad-CAM hooks the shared models.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from PIL import Image
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from posturescreen import __version__
from posturescreen.data.images import PHOTO_FORMATS, ImageReadError, decode_image
from posturescreen.posture.estimator import PoseEstimator
from posturescreen.posture.faces import FaceFinder
from posturescreen.screening.bundle import Bundle
from posturescreen.screening.predict import PredictionResult, decode_for_bundles, predict_image
from posturescreen.screening.web.hosts import LOOPBACK_HOSTS
from posturescreen.stats.metrics import format_estimate

ACCEPTED_TYPES = ("image/", "application/octet-stream")
UPLOAD_MIME_TYPES = tuple(f"image/{f.lower()}" for f in PHOTO_FORMATS)
log = logging.getLogger("posturescreen.screening.web")


class TaskResult(PredictionResult):
    cam_overlay_png: str | None = None  # data URL; none unless status is ok


class PredictResponse(BaseModel):
    width: int
    height: int
    results: list[TaskResult]
    caution: str


class ModelInfo(BaseModel):
    task: str
    model: str
    threshold: float
    threshold_how: str
    folds: int
    intended_use: str
    auc: str | None
    sensitivity: float | None = None  # the bundle's own rule on the study's out-of-fold photos
    specificity: float | None = None


CAUTION = ("Research tool, not a diagnosis. Probabilities come from models trained on one "
           "study's photos and may not hold for other people, cameras or settings.")


def _png_data_url(rgb) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _auc_text(bundle: Bundle) -> str | None:
    """The study's photo-level AUC (the page decides on one photo)."""
    for m in bundle.metadata.metrics:
        if (m.get("metric") == "AUC" and m.get("ci_kind") == "bootstrap"
                and m.get("level", "photo") == "photo"):
            try:  # metrics are free-form in metadata.json: informative, never trusted
                return format_estimate(*(float("nan") if m.get(k) is None else float(m[k])
                                         for k in ("estimate", "ci_low", "ci_high")))
            except (TypeError, ValueError):
                return None
    return None


def create_app(bundles: list[Bundle], *, max_upload_bytes: int = 20 * 2**20,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
               upload_timeout_s: float = 30.0, blur_faces: bool = True) -> FastAPI:
    """The page and API. `allowed_hosts`: Host header names accepted (`*` for any);
    `upload_timeout_s`: the longest a client may take to send a photo; `blur_faces`: faces
    blurred in the pictures returned."""
    app = FastAPI(title="posturescreen", version=__version__, docs_url=None, redoc_url=None,
                  description="Screen one side-view sitting photo with exported study "
                              "models. " + CAUTION)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posturescreen-model")
    # the pose estimator and the face finder live on the model thread too (made on first
    # use there)
    estimator: list[PoseEstimator] = []
    finder: list[FaceFinder] = []
    needs_pose = blur_faces or any(b.needs_pose for b in bundles)
    limit_text = f"{max_upload_bytes / 2**20:g} MB"
    page = resources.files("posturescreen.screening.web").joinpath("page.html").read_text("utf-8")
    page = page.replace('accept="image/*"', f'accept="{",".join(UPLOAD_MIME_TYPES)}"')

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/models", response_model=list[ModelInfo])
    def models() -> list[ModelInfo]:
        return [ModelInfo(task=b.metadata.task, model=b.metadata.model,
                          threshold=b.threshold, threshold_how=b.metadata.threshold.how,
                          folds=len(b.metadata.folds), intended_use=b.metadata.intended_use,
                          auc=_auc_text(b),
                          sensitivity=b.metadata.operating_point.Sen
                          if b.metadata.operating_point else None,
                          specificity=b.metadata.operating_point.Spe
                          if b.metadata.operating_point else None) for b in bundles]

    @app.post("/api/predict", response_model=PredictResponse,
              responses={400: {"description": "empty body"},
                         408: {"description": "the upload took longer than the time limit"},
                         413: {"description": "larger than the upload limit"},
                         415: {"description": "not sent as an image"},
                         422: {"description": "not a readable image, or a decompression "
                                              "bomb"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  t: {"schema": {"type": "string", "format": "binary"}}
                  for t in UPLOAD_MIME_TYPES}}})
    async def predict(request: Request) -> PredictResponse | Response:
        """Send the photo's bytes as the request body (Content-Type image/*; JPEG, PNG,
        WebP, BMP or TIFF)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype.startswith(ACCEPTED_TYPES):
            raise HTTPException(415, f"send the photo's bytes with an image content type, "
                                     f"not {ctype or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_upload_bytes:
            raise HTTPException(413, f"photo larger than {limit_text}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(upload_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPException(413, f"photo larger than {limit_text}")
                    chunks.append(chunk)
        except TimeoutError:
            raise HTTPException(408, f"the photo took longer than {upload_timeout_s:g} s "
                                     "to arrive; try again") from None
        except ClientDisconnect:
            # the client went away (closed the tab, lost the network): nothing to answer
            log.info("upload dropped by the client after %d bytes", size)
            return Response(status_code=400)
        data = b"".join(chunks)
        if not data:
            raise HTTPException(400, "empty upload (0 bytes)")
        del chunks
        # decoding and the models run on one dedicated thread: the event loop keeps serving,
        # and torch's per-thread caches exist once (a thread pool grew memory by 2.5 GB under
        # 20 concurrent requests)
        return await asyncio.get_running_loop().run_in_executor(model_thread,
                                                                _decode_and_predict, data)

    def _decode_and_predict(data: bytes) -> PredictResponse:
        try:
            decoded = decode_for_bundles(bundles, lambda size: decode_image(data, "upload", size))
        except ImageReadError as e:
            raise HTTPException(422, str(e)) from e
        if needs_pose and not estimator:
            estimator.append(PoseEstimator())
        if blur_faces and not finder:
            finder.append(FaceFinder(estimator[0]))
        seen: dict[int, tuple] = {}  # decode size -> (pose, faces): found once per photo
        results = [_result(b, *decoded[b.decode_size], seen) for b in bundles]
        full_size = next(iter(decoded.values()))[1]
        return PredictResponse(width=full_size[0], height=full_size[1], caution=CAUTION,
                               results=results)

    def _result(bundle: Bundle, image: Image.Image, full_size: tuple[int, int],
                seen: dict[int, tuple]) -> TaskResult:
        """One bundle's answer; a failure is that bundle's `error`, never an HTTP 500."""
        try:
            if bundle.decode_size not in seen:
                pose = estimator[0](image, full_size, bundle.metadata.pose.crop_margin) \
                    if estimator else None
                seen[bundle.decode_size] = (
                    pose, finder[0](image, full_size, first=pose) if finder else None)
            pose, faces = seen[bundle.decode_size]
            p = predict_image(bundle, image, full_size, blur_faces=blur_faces, pose=pose,
                              estimator=estimator[0] if estimator else None, faces=faces)
        except Exception as e:  # the other bundles still answer
            log.exception("%s: prediction failed", bundle.name)
            return TaskResult(task=bundle.metadata.task, model=bundle.metadata.model,
                              kind=bundle.metadata.kind, status="error",
                              threshold=bundle.threshold,
                              error=f"could not be scored ({type(e).__name__})")
        picture = _png_data_url(p.cam_overlay) if p.cam_overlay is not None else None
        return TaskResult(**p.as_dict(), cam_overlay_png=picture)

    return app
