"""The orbit camera of a scene and how it is fitted to an arm's bounding box (pure numpy: no PyBullet here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Share of the image's half-width / half-height the box may fill: the rest leaves room for the caption at the top,
# the legend at the bottom, and for the perspective (a box fitted at its corners hugs the arm loosely).
FILL_X, FILL_Y = 0.9, 0.8
# The PyBullet window's projection is its own: a frustum whose half-height equals its near distance (its projection
# matrix has [1][1] = 1), i.e. a 90° vertical field of view.
GUI_FOV = 90.0


@dataclass
class Camera:
    """Orbit camera: target point, distance (m), yaw and pitch (deg), vertical field of view (deg)."""

    target: tuple[float, float, float] = (0.0, 0.0, 0.55)
    distance: float = 2.3
    yaw: float = 60.0
    pitch: float = -20.0
    fov: float = 45.0


def fit_camera(points: np.ndarray, world_to_eye: np.ndarray, aspect: float, yaw: float, pitch: float,
               fov: float = Camera.fov, span_y: float = 1.0, centre_y: float = 0.0) -> Camera:
    """A camera at ``yaw``/``pitch`` as close as it can be with every one of ``points`` (world, m; e.g. the corners
    of an arm's link boxes) inside the ``FILL_X``/``FILL_Y`` part of the image, their projection centred.

    ``world_to_eye`` is the camera's 3x3 rotation (eye x right, y up, z towards the camera) for that yaw/pitch.
    ``span_y`` is the share of the height they may use and ``centre_y`` where its middle is (fraction of the
    height above the image centre; text bands make it off-centre). A point at eye coordinates (x, y, z) relative
    to the target, seen from distance D, is at depth D - z and fits when |x| <= (D - z) tan(hfov/2) and
    |y| <= (D - z) tan(vfov/2): D is the largest such bound once the target centres the projection."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    rot = np.asarray(world_to_eye, dtype=np.float64)
    tan_v = float(np.tan(np.radians(fov) / 2))
    tan_x, tan_y = tan_v * aspect * FILL_X, tan_v * FILL_Y * span_y
    target = (pts.min(axis=0) + pts.max(axis=0)) / 2

    def distance(eye: np.ndarray) -> float:
        need = np.maximum(eye[:, 2] + np.abs(eye[:, 0]) / tan_x, eye[:, 2] + np.abs(eye[:, 1]) / tan_y)
        return max(float(need.max()), float(eye[:, 2].max()) + 0.1, 0.3)  # never inside the arm

    for _ in range(3):  # perspective: centring the projection moves the target, which changes the depths a little
        eye = (pts - target) @ rot.T
        d = distance(eye)
        tangent = eye[:, :2] / (d - eye[:, 2])[:, None]  # of the angle off the view axis, per point
        mid = (tangent.max(axis=0) + tangent.min(axis=0)) / 2
        target = target + (rot[0] * mid[0] + rot[1] * mid[1]) * d
    d = distance((pts - target) @ rot.T)
    # Then move the picture to the band's middle: aiming s lower lifts what is at depth d by s / d in tangent.
    target = target - rot[1] * (2 * centre_y * tan_v) * d
    return Camera((float(target[0]), float(target[1]), float(target[2])), d, yaw, pitch, fov)
