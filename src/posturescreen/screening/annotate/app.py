"""The annotation page and its JSON API (FastAPI): a rater walks through a manifest's photos
and places landmarks; every placement is saved at once (store.py).

Hardening as the screening page's (screening/web): loopback by default, a Host allow-list
(DNS rebinding), no Swagger UI and nothing from a CDN, photos named by their number in the
session (a request never names a file path). Besides, this server writes: every change
needs the session's token (in the page; another web site open in the same browser cannot
read it), sent as a header with a JSON body, so a cross-site form or script cannot place or
clear points; the photos need it too (faces are shown unblurred to the annotator only).
Photos are re-encoded from their pixels: nothing of the original file's metadata leaves.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from enum import StrEnum
from importlib import resources
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from posturescreen import __version__
from posturescreen.data.annotations import AnnotationFileError, Point
from posturescreen.data.images import ImageReadError
from posturescreen.data.landmarks import LANDMARKS
from posturescreen.files import OutputError
from posturescreen.screening.annotate.session import (
    AnnotationSession,
    angles_of,
    point_json,
)
from posturescreen.screening.annotate.store import AnnotationInputError
from posturescreen.screening.annotate.suggest import Suggestions
from posturescreen.screening.web.hosts import LOOPBACK_HOSTS

TOKEN_HEADER = "X-Annotate-Token"


class Order(StrEnum):
    manifest = "manifest"
    unannotated = "unannotated"  # photos this rater has not finished first
    unsure = "unsure"  # the suggester's least sure photos first


class Change(BaseModel):
    """`placed` at (x, y) (a moved suggestion is recorded as `moved`), `accepted` (the
    suggestion, unchanged), `not_visible`, or `clear` (not annotated)."""

    status: Literal["placed", "accepted", "not_visible", "clear"]
    x: float | None = Field(None, allow_inf_nan=False)
    y: float | None = Field(None, allow_inf_nan=False)


def _progress(session: AnnotationSession, records=None) -> dict:
    return {"annotated": len(session.done(records)), "total": len(session.images)}


def create_app(session: AnnotationSession, suggestions: Suggestions, *,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The page and API of one session; `suggestions` proposes points (its suggester may
    be None: no suggestions)."""
    app = FastAPI(title="posturescreen annotate", version=__version__, docs_url=None,
                  redoc_url=None, description="Place landmarks on a manifest's photos.")
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    token = secrets.token_urlsafe(24)
    label = suggestions_label(suggestions)
    page = (resources.files("posturescreen.screening.annotate").joinpath("page.html")
            .read_text("utf-8").replace("__TOKEN__", token))

    @app.exception_handler(AnnotationFileError)
    def damaged(_request, e: AnnotationFileError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=409)

    @app.exception_handler(ImageReadError)
    def unreadable(_request, e: ImageReadError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(OutputError)
    def unwritable(_request, e: OutputError) -> JSONResponse:
        return JSONResponse({"detail": f"not saved: {e}"}, status_code=507)

    def check_token(x_annotate_token: str = Header("", alias=TOKEN_HEADER)) -> None:
        if not secrets.compare_digest(x_annotate_token, token):
            raise HTTPException(403, "missing or wrong session token: reload the page")

    def photo_index(i: int) -> int:
        if not 0 <= i < len(session.images):
            raise HTTPException(404, f"no photo {i} (this session has "
                                     f"{len(session.images)})")
        return i

    def state(i: int, records=None) -> dict:
        records = session.mine() if records is None else records
        rec = records.get(session.images[i])
        sug = suggestions.get(i)
        if sug.error:
            raise HTTPException(422, sug.error)
        width, height = session.size(i)
        return {
            "index": i, "image": session.images[i], "row": session.rows[i],
            "width": width, "height": height,
            "points": {n: point_json(p) for n, p in (rec.points if rec else {}).items()
                       if n in session.names},
            "suggestions": {n: {"x": round(x, 2), "y": round(y, 2), "confidence": round(c, 3)}
                            for n, (x, y, c) in sug.points.items() if n in session.names},
            "angles": angles_of(rec),
            "done": rec is not None and rec.is_done(session.names),
            "progress": _progress(session, records),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/session", dependencies=[Depends(check_token)])
    def describe() -> dict:
        return {
            "manifest": session.manifest.name, "annotation_file": str(session.store.path),
            "rater": session.rater, "suggester": label,
            "landmarks": [{"name": n, "description": LANDMARKS[n],
                           "suggested": n in suggestions.suggestible} for n in session.names],
            "photos": [{"index": i, "image": img, "row": r} for i, (img, r)
                       in enumerate(zip(session.images, session.rows, strict=True))],
            "missing": session.missing,
            "progress": _progress(session),
        }

    @app.get("/api/order", dependencies=[Depends(check_token)])
    def order(by: Order = Order.manifest) -> dict:
        n = len(session.images)
        indices = list(range(n))
        if by is Order.unannotated:
            done = session.done()
            indices.sort(key=lambda i: i in done)
        elif by is Order.unsure:
            conf = {i: suggestions.confidence(i) for i in indices}
            indices.sort(key=lambda i: (conf[i] is None, conf[i] if conf[i] is not None
                                        else 0.0))
        return {"order": indices, "ranked": suggestions.ranked() if suggestions.suggestible
                else 0, "total": n}

    @app.get("/api/photos/{i}", dependencies=[Depends(check_token)])
    def photo(i: int) -> dict:
        return state(photo_index(i))

    @app.get("/api/photos/{i}/image", response_class=Response)
    def image(i: int, token_: str = Query("", alias="token")) -> Response:
        if not secrets.compare_digest(token_, token):
            raise HTTPException(403, "missing or wrong session token: reload the page")
        data = session.photo_jpeg(photo_index(i))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})

    @app.put("/api/photos/{i}/points/{name}", dependencies=[Depends(check_token)])
    def change(i: int, name: str, body: Change) -> dict:
        i = photo_index(i)
        if name not in session.names:
            raise HTTPException(404, f"landmark {name!r} is not placed in this session "
                                     f"(landmarks: {', '.join(session.names)})")
        try:
            point = _point(body, name, suggestions.get(i).points)
            session.store.set_point(session.info(i, label), name, point)
        except AnnotationInputError as e:
            raise HTTPException(422, str(e)) from e
        return state(i)

    return app


def suggestions_label(suggestions: Suggestions) -> str:
    """What the annotation file's `suggester` column says."""
    s = suggestions.suggester
    if s is None or not suggestions.suggestible:
        return "none"
    return str(getattr(s, "label", getattr(s, "__name__", "custom")))


def _point(body: Change, name: str, suggested: dict) -> Point | None:
    if body.status == "clear":
        return None
    if body.status == "not_visible":
        return Point("not_visible")
    if body.status == "accepted":
        if name not in suggested:
            raise AnnotationInputError(f"no suggestion for {name!r} to accept: place it")
        x, y, _ = suggested[name]
        return Point("accepted", x, y)
    if body.x is None or body.y is None:
        raise AnnotationInputError(f"placing {name!r} needs x and y")
    return Point("moved" if name in suggested else "placed", body.x, body.y)
