"""The built-in procedural dataset: "creatures" made of parts, no download needed.

Each image shows one creature: a shaded body on a textured background, with four parts (two
eyes, a nose, a mouth) at jittered but consistent positions, like an aligned face. The class
(one of :data:`CLASS_NAMES`) decides only the *shapes* of the parts (eyes, nose, mouth); body
and part colours are drawn independently of the class, so a classifier must read part shapes,
not colours, and the layout is the same across classes, so a generator can learn where parts
belong. Parts are high-contrast closed contours of 5-15 % of the image
area, which is what EdgeBoxes' objectness and the default area filter pick up.

Image ``i`` is a pure function of (version, i): the dataset is identical on every machine.
"""

from __future__ import annotations

import cv2
import numpy as np

from kpbench.errors import KpbenchError

BUILTIN_PREFIX = "builtin"
BUILTIN_VERSION = 2  # bump when the drawing changes: it enters the manifest hash
DEFAULT_COUNT = 1200
CANVAS = 256  # drawing resolution; Preprocess resizes to S (antialiasing for free)

CLASS_NAMES = ("round", "square", "diamond", "bar")
# Part colours (RGB), drawn independently of the class.
_PART_RGB = ((30, 30, 160), (150, 20, 20), (20, 110, 30), (90, 20, 120), (20, 100, 120))


def parse_builtin_source(text: str) -> int:
    """``builtin`` -> default count; ``builtin:COUNT`` -> COUNT images."""
    if text == BUILTIN_PREFIX:
        return DEFAULT_COUNT
    raw = text.split(":", 1)[1]
    if not raw.isdigit() or int(raw) < 2:
        raise KpbenchError(f"bad built-in source {text!r}; use builtin or builtin:COUNT with COUNT >= 2")
    return int(raw)


def _hsv_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    pixel = np.asarray([[[hue, saturation, value]]]).astype(np.uint8)
    red, green, blue = cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0]
    return int(red), int(green), int(blue)


def _smooth_noise(rng: np.random.Generator, side: int, cells: int, amplitude: float) -> np.ndarray:
    """(side, side) low-frequency noise in [-amplitude, amplitude]: a coarse grid upsampled."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC) * amplitude


def _draw_eye(canvas: np.ndarray, centre: tuple[int, int], radius: int, kind: str,
              colour: tuple[int, int, int], look: tuple[int, int]) -> None:
    """A white sclera of the class's shape, a coloured iris and a black pupil."""
    cx, cy = centre
    white = (245, 245, 240)
    if kind == "round":
        cv2.circle(canvas, centre, radius, white, -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, radius, (20, 20, 20), 3, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(canvas, (cx - radius, cy - radius), (cx + radius, cy + radius), white, -1)
        cv2.rectangle(canvas, (cx - radius, cy - radius), (cx + radius, cy + radius), (20, 20, 20), 3)
    elif kind == "diamond":
        points = np.array([[cx, cy - radius - 4], [cx + radius + 4, cy], [cx, cy + radius + 4],
                           [cx - radius - 4, cy]], np.int32)
        cv2.fillPoly(canvas, [points], white, cv2.LINE_AA)
        cv2.polylines(canvas, [points], True, (20, 20, 20), 3, cv2.LINE_AA)
    else:  # "bar": a wide rounded slot
        axes = (radius + 6, int(radius * 0.6))
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, white, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, (20, 20, 20), 3, cv2.LINE_AA)
    iris = (cx + look[0], cy + look[1])
    cv2.circle(canvas, iris, radius // 2, colour, -1, cv2.LINE_AA)
    cv2.circle(canvas, iris, radius // 4, (10, 10, 10), -1, cv2.LINE_AA)


def _draw_nose(canvas: np.ndarray, centre: tuple[int, int], size: int, kind: str,
               colour: tuple[int, int, int]) -> None:
    cx, cy = centre
    if kind in ("round", "bar"):
        points = np.array([[cx, cy - size], [cx + size * 3 // 4, cy + size * 2 // 3],
                           [cx - size * 3 // 4, cy + size * 2 // 3]], np.int32)
    else:
        points = np.array([[cx, cy - size], [cx + size * 2 // 3, cy], [cx, cy + size * 2 // 3],
                           [cx - size * 2 // 3, cy]], np.int32)
    darker = tuple(int(c * 0.6) for c in colour)
    cv2.fillPoly(canvas, [points], darker, cv2.LINE_AA)
    cv2.polylines(canvas, [points], True, (15, 15, 15), 3, cv2.LINE_AA)


def _draw_mouth(canvas: np.ndarray, centre: tuple[int, int], width: int, kind: str,
                colour: tuple[int, int, int], openness: float) -> None:
    cx, cy = centre
    height = max(8, int(width * 0.35 * openness))
    if kind in ("round", "diamond"):
        cv2.ellipse(canvas, centre, (width // 2, height), 0, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, centre, (width // 2, height), 0, 0, 360, (15, 15, 15), 3, cv2.LINE_AA)
        cv2.line(canvas, (cx - width // 2 + 6, cy), (cx + width // 2 - 6, cy), (245, 245, 240), 3,
                 cv2.LINE_AA)
    else:
        top_left, bottom_right = (cx - width // 2, cy - height), (cx + width // 2, cy + height)
        cv2.rectangle(canvas, top_left, bottom_right, colour, -1)
        cv2.rectangle(canvas, top_left, bottom_right, (15, 15, 15), 3)
        for tooth in range(1, 4):
            x = cx - width // 2 + tooth * width // 4
            cv2.line(canvas, (x, cy - height), (x, cy - height // 3), (245, 245, 240), 3)


def render_creature(index: int, version: int = BUILTIN_VERSION) -> tuple[np.ndarray, str]:
    """Image ``index`` as uint8 (CANVAS, CANVAS, 3) RGB, and its class name."""
    kind, rng = _class_and_rng(index, version)
    side = CANVAS

    # Background: a two-colour vertical gradient with soft mottling (muted, low contrast).
    top = np.array(_hsv_rgb(rng.uniform(0, 180), rng.uniform(20, 60), rng.uniform(150, 210)), np.float32)
    bottom = np.array(_hsv_rgb(rng.uniform(0, 180), rng.uniform(20, 60), rng.uniform(90, 150)), np.float32)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    canvas = top * (1 - ramp) + bottom * ramp + _smooth_noise(rng, side, 6, 12.0)[..., None]

    # Body: a shaded ellipse whose centre and size are jittered a little, like face alignment.
    cx = int(side / 2 + rng.uniform(-8, 8))
    cy = int(side / 2 + 6 + rng.uniform(-8, 8))
    axes = (int(rng.uniform(100, 116)), int(rng.uniform(108, 122)))
    body_rgb = np.array(_hsv_rgb(rng.uniform(0, 180), rng.uniform(90, 170),
                                 rng.uniform(170, 235)), np.float32)
    body_mask = np.zeros((side, side), np.uint8)
    cv2.ellipse(body_mask, (cx, cy), axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    radial = np.sqrt(((xx - cx) / axes[0]) ** 2 + ((yy - cy) / axes[1]) ** 2)
    shading = 1.0 - 0.25 * np.clip(radial, 0, 1) ** 2 + _smooth_noise(rng, side, 10, 0.04)
    body = body_rgb * shading[..., None]
    alpha = (body_mask.astype(np.float32) / 255.0)[..., None]
    canvas = np.clip(canvas * (1 - alpha) + body * alpha, 0, 255).astype(np.uint8)
    canvas = np.ascontiguousarray(canvas)

    # Parts: positions relative to the body centre, each jittered independently.
    base_rgb = _PART_RGB[int(rng.integers(len(_PART_RGB)))]
    red, green, blue = (int(np.clip(c + rng.uniform(-25, 25), 0, 255)) for c in base_rgb)
    part_rgb = (red, green, blue)
    eye_radius = int(rng.uniform(25, 31))
    eye_dx, eye_dy = int(rng.uniform(44, 54)), int(rng.uniform(36, 46))
    look = (int(rng.uniform(-6, 6)), int(rng.uniform(-5, 5)))
    for sign in (-1, 1):
        eye = (cx + sign * eye_dx + int(rng.uniform(-4, 4)), cy - eye_dy + int(rng.uniform(-4, 4)))
        _draw_eye(canvas, eye, eye_radius, kind, part_rgb, look)
    nose = (cx + int(rng.uniform(-5, 5)), cy + 12 + int(rng.uniform(-5, 5)))
    _draw_nose(canvas, nose, int(rng.uniform(24, 30)), kind, part_rgb)
    mouth = (cx + int(rng.uniform(-6, 6)), cy + 66 + int(rng.uniform(-5, 5)))
    _draw_mouth(canvas, mouth, int(rng.uniform(78, 100)), kind, part_rgb, rng.uniform(0.6, 1.0))
    return canvas, kind


def _class_and_rng(index: int, version: int = BUILTIN_VERSION) -> tuple[str, np.random.Generator]:
    """The class of image ``index`` (the first draw of its generator) and the generator."""
    rng = np.random.default_rng([version, index])
    return CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))], rng


def render_creature_label(index: int, version: int = BUILTIN_VERSION) -> str:
    return _class_and_rng(index, version)[0]
