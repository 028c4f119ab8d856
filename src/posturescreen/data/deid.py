"""De-identification of pictures: faces blurred, from the pose estimator's face box, in every
image the report, CAM galleries and pages show (`privacy.blur_faces`, on by default).

The blur is strong (a Gaussian of a third of the face's size, inside an ellipse with a soft
edge): it hides identity, not posture — the head's outline and position stay visible."""

from __future__ import annotations

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


def blur_chw(image_chw: np.ndarray, box: Box | None) -> np.ndarray:
    """blur_face for a (3, S, S) model input; unchanged when there is no face box."""
    if box is None:
        return image_chw
    return blur_face(image_chw.transpose(1, 2, 0), box).transpose(2, 0, 1).copy()
