"""De-identification of pictures: faces blurred in every image the report, CAM galleries and
pages show (`privacy.blur_faces`, on by default). It fails closed: when not every face in a
photo could be found (posture/faces.py says when), the whole picture is blurred.

A face's blur is strong (a Gaussian of a third of the face's size, inside an ellipse with a
soft edge): it hides identity, not posture — the head's outline and position stay
visible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from posturescreen.data.images import Box, Frame


def blur_face(rgb: np.ndarray, box: Box) -> np.ndarray:
    """A copy of the RGB uint8 (H, W, 3) picture with the face inside `box` (its pixels)
    blurred."""
    h, w = rgb.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return rgb.copy()
    img = Image.fromarray(rgb)
    radius = max(2.0, (x1 - x0 + y1 - y0) / 6)
    blurred = img.filter(ImageFilter.GaussianBlur(radius))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse([x0, y0, x1, y1], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, radius / 4)))
    return np.asarray(Image.composite(blurred, img, mask)).copy()


def face_in_frame(face: Box | None, frame: Frame | None) -> Box | None:
    """A face box in photo pixels, mapped into a model's letterboxed frame."""
    if face is None or frame is None:
        return None
    x0, y0 = frame.point(face[0], face[1])
    x1, y1 = frame.point(face[2], face[3])
    return (x0, y0, x1, y1)


def blur_whole(rgb: np.ndarray) -> np.ndarray:
    """The whole RGB uint8 (H, W, 3) picture blurred as strongly as a face: what a picture
    shows when not every face in it could be found."""
    radius = max(2.0, max(rgb.shape[:2]) / 12)
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius))).copy()


def deidentify_chw(image_chw: np.ndarray, boxes: Sequence[Box], *, complete: bool
                   ) -> np.ndarray:
    """A (3, S, S) picture with every face box (its pixels) blurred, or, when the boxes are
    not known to be every face (`complete` False), the whole picture: it fails closed."""
    rgb = image_chw.transpose(1, 2, 0)
    if not complete:
        rgb = blur_whole(np.ascontiguousarray(rgb))
    else:
        for box in boxes:
            rgb = blur_face(np.ascontiguousarray(rgb), box)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))
