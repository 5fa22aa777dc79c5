"""Synthetic twin of NYU Depth v2: ray-cast indoor rooms written in the labelled file's layout.

Every consumer loads data through :func:`depthtune.data.nyu.read_nyu`, so demos and tests run
the same reader as the real 2.8 GB file. A scene is a box room (floor, walls, ceiling) with
cabinets, tables, beds, boxes, pictures, balls and columns, seen by a pinhole camera with
NYU-like intrinsics from several poses, as NYU's labelled frames are a few views of each room
(1449 frames of 464 scenes); the frames of a room share its scene name, which splits keep on one side.
Depth is z-depth in metres, as NYU stores it; the image carries the cues a CNN uses for depth:
perspective, occlusion, Lambertian shading from a ceiling light and a light at the camera (falling
off with distance), and world-space textures of fixed physical size.
Frame ``i`` depends only on ``(seed, i, views_per_room)``, so any number of workers writes identical files.
Workers are spawned processes: a script that calls ``generate_dataset(workers=2)`` needs the
usual ``if __name__ == "__main__":`` guard. The file is written to a temporary name beside the
target and renamed when complete, so an interrupted run never leaves a partial file there.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from depthtune.data.nyu_writer import CLASS_NAMES, FRAME_SHAPE, NYUFileWriter, Rendered

log = logging.getLogger(__name__)

FX, FY, CX, CY = 519.0, 519.0, 320.0, 240.0
MIN_DEPTH, MAX_DEPTH = 0.7, 10.0
_CLS = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}
_EPS = 1e-4


# ----------------------------------------------------------------------------- textures


def _hash(i: np.ndarray, j: np.ndarray, key: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1] per integer lattice cell."""
    h = i.astype(np.int64) * 0x27D4EB2D + j.astype(np.int64) * 0x165667B1 + key * 0x9E3779B1
    h = (h ^ (h >> 15)) * 0x2C1B3C6D
    h = h ^ (h >> 12)
    return (h & 0xFFFF).astype(np.float32) / np.float32(65535.0)


def _noise(u: np.ndarray, v: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with features of ``scale`` metres."""
    x, y = u / scale, v / scale
    i, j = np.floor(x), np.floor(y)
    fx, fy = x - i, y - j
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    i, j = i.astype(np.int64), j.astype(np.int64)
    top = _hash(i, j, key) * (1 - fx) + _hash(i + 1, j, key) * fx
    bottom = _hash(i, j + 1, key) * (1 - fx) + _hash(i + 1, j + 1, key) * fx
    return top * (1 - fy) + bottom * fy


def _colour(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.9, saturation: float = 0.5) -> np.ndarray:
    """Random albedo: a grey level pushed towards a random hue by ``saturation``."""
    grey = rng.uniform(lo, hi)
    hue = rng.uniform(0.0, 1.0, 3)
    return np.clip(grey * (1 + saturation * (hue - hue.mean()) * 2), 0.02, 0.95).astype(np.float32)


Material = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _material(rng: np.random.Generator, kind: str) -> Material:
    """A texture ``(u, v) metres -> (m, 3) albedo`` of the given kind with random parameters."""
    key = int(rng.integers(1, 2**31 - 1))
    c1 = _colour(rng)
    c2 = np.clip(c1 * rng.uniform(0.6, 1.4, 3), 0.02, 0.95).astype(np.float32)
    detail = rng.uniform(0.03, 0.15)
    if kind == "tiles":
        size, grout = rng.uniform(0.25, 0.6), rng.uniform(0.008, 0.02)
        grout_c = c1 * rng.uniform(0.3, 0.6)

        def tex(u, v):
            x, y = u / size, v / size
            i, j = np.floor(x), np.floor(y)
            jitter = 0.85 + 0.3 * _hash(i, j, key)
            edge = np.minimum(np.minimum(x - i, 1 - x + i), np.minimum(y - j, 1 - y + j)) * size
            out = np.where(((i + j) % 2 == 0)[:, None], c1, c2) * jitter[:, None]
            return np.where((edge < grout / 2)[:, None], grout_c, out)
    elif kind == "planks":
        width, length = rng.uniform(0.1, 0.22), rng.uniform(0.8, 1.6)
        swap = rng.random() < 0.5

        def tex(u, v):
            if swap:
                u, v = v, u
            j = np.floor(v / width)
            x = u / length + _hash(j, j, key)
            i = np.floor(x)
            jitter = 0.75 + 0.5 * _hash(i, j, key + 1)
            grain = 1 + 0.12 * np.sin(2 * np.pi * (v / 0.013 + 3 * _noise(u, v, 0.3, key)))
            seam = np.minimum((x - i) * length, (v / width - j) * width) < 0.006
            out = c1 * (jitter * grain)[:, None]
            return np.where(seam[:, None], c1 * 0.35, out)
    elif kind == "stripes":
        width = rng.uniform(0.04, 0.3)
        axis = rng.random() < 0.7

        def tex(u, v):
            s = (u if axis else v) / width
            out = np.where((np.floor(s) % 2 == 0)[:, None], c1, c2)
            return out * (1 - detail + 2 * detail * _noise(u, v, 0.05, key))[:, None]
    elif kind == "bricks":
        bw, bh = rng.uniform(0.2, 0.3), rng.uniform(0.06, 0.09)

        def tex(u, v):
            j = np.floor(v / bh)
            x = u / bw + 0.5 * (j % 2)
            i = np.floor(x)
            mortar = np.minimum((x - i) * bw, (v / bh - j) * bh) < 0.01
            out = c1 * (0.8 + 0.4 * _hash(i, j, key))[:, None]
            return np.where(mortar[:, None], np.float32(0.75), out)
    elif kind == "checker":
        size = rng.uniform(0.05, 0.25)

        def tex(u, v):
            odd = (np.floor(u / size) + np.floor(v / size)) % 2 == 0
            return np.where(odd[:, None], c1, c2)
    elif kind == "blotches":
        scale = rng.uniform(0.05, 0.3)
        c3 = _colour(rng, saturation=0.9)

        def tex(u, v):
            t = _noise(u, v, scale, key)[:, None]
            return c1 * (1 - t) + c3 * t
    else:

        def tex(u, v):
            low = 0.85 + 0.3 * _noise(u, v, 0.6, key)
            fine = 1 - detail + 2 * detail * _noise(u, v, 0.025, key + 7)
            return c1 * (low * fine)[:, None]

    return tex


# ------------------------------------------------------------------------------ geometry


def _rot_y(a: float) -> np.ndarray:
    """Rotation about the vertical axis."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_x(a: float) -> np.ndarray:
    """Rotation about the horizontal axis; positive pitches the view down."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    """Rotation about the optical axis."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@lru_cache(maxsize=1)
def _camera_rays() -> np.ndarray:
    """(3, H*W) camera-frame ray directions with z = 1, so ray parameter t is z-depth."""
    h, w = FRAME_SHAPE
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)]).reshape(3, -1)


@dataclass
class _Box:
    """Box resting at height ``base`` and rotated by ``yaw`` about the vertical axis."""

    centre: np.ndarray  # (x, z) of the footprint centre
    half: np.ndarray  # half sizes (x, y, z)
    yaw: float
    base: float
    cls: str
    tex: Material

    def _centre3(self) -> np.ndarray:
        return np.array([self.centre[0], self.base + self.half[1], self.centre[1]])

    def _to_local(self, p: np.ndarray) -> np.ndarray:
        rot = _rot_y(-self.yaw).astype(np.float32)
        return rot @ (p - self._centre3()[:, None].astype(np.float32))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter (= z-depth) of the first hit per ray, inf on a miss (slab test)."""
        rot = _rot_y(-self.yaw)
        lo_ = rot @ (o - self._centre3())
        ld = rot.astype(np.float32) @ d
        near = np.full(d.shape[1], -np.inf, np.float32)
        far = np.full(d.shape[1], np.inf, np.float32)
        for k in range(3):
            inv = 1.0 / np.where(np.abs(ld[k]) < 1e-9, np.float32(1e-9), ld[k])
            t1 = (-self.half[k] - lo_[k]) * inv
            t2 = (self.half[k] - lo_[k]) * inv
            np.maximum(near, np.minimum(t1, t2), out=near)
            np.minimum(far, np.maximum(t1, t2), out=far)
        return np.where((near <= far) & (near > _EPS), near, np.inf).astype(np.float32)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normals (3, m) and albedo (m, 3) at hit points ``p``, textured per face."""
        lp = self._to_local(p)
        face = np.argmax(np.abs(lp) / self.half[:, None].astype(np.float32), axis=0)
        n_local = np.zeros_like(lp)
        cols = np.arange(lp.shape[1])
        n_local[face, cols] = np.sign(lp[face, cols])
        normal = _rot_y(self.yaw).astype(np.float32) @ n_local
        u = np.where(face == 0, lp[2], lp[0])
        v = np.where(face == 1, lp[2], lp[1])
        return normal, self.tex(u, v)


@dataclass
class _Sphere:
    """Sphere of radius ``r`` centred at ``centre`` (x, y, z)."""

    centre: np.ndarray
    r: float
    cls: str
    tex: Material

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = (o - self.centre).astype(np.float32)
        a = np.einsum("ij,ij->j", d, d)
        b = oc @ d
        c = float(oc @ oc - self.r**2)
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > _EPS), t, np.inf).astype(np.float32)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (p - self.centre[:, None].astype(np.float32)) / np.float32(self.r)
        u = np.arctan2(n[2], n[0]) * self.r
        return n, self.tex(u, p[1])


@dataclass
class _Cylinder:
    """Vertical cylinder standing on the floor, radius ``r`` and height ``height``."""

    centre: np.ndarray  # (x, z)
    r: float
    height: float
    cls: str
    tex: Material

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ox, oz = o[0] - self.centre[0], o[2] - self.centre[1]
        a = d[0] * d[0] + d[2] * d[2]
        b = ox * d[0] + oz * d[2]
        c = ox * ox + oz * oz - self.r**2
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(disc)) / a
        y = o[1] + t * d[1]
        side = np.where((disc >= 0) & (t > _EPS) & (y >= 0) & (y <= self.height), t, np.inf)
        if o[1] <= self.height:
            return side.astype(np.float32)
        with np.errstate(divide="ignore"):
            tc = (self.height - o[1]) / d[1]
        xc, zc = ox + tc * d[0], oz + tc * d[2]
        cap = np.where((tc > _EPS) & (xc * xc + zc * zc <= self.r**2), tc, np.inf)
        return np.minimum(side, cap).astype(np.float32)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dz = p[0] - self.centre[0], p[2] - self.centre[1]
        on_cap = (p[1] > self.height - 1e-3) & (dx * dx + dz * dz < (self.r * 0.999) ** 2)
        n = np.stack([dx / self.r, np.zeros_like(dx), dz / self.r])
        n[:, on_cap] = np.array([[0.0], [1.0], [0.0]], np.float32)
        u = np.where(on_cap, dx, np.arctan2(dz, dx) * self.r)
        v = np.where(on_cap, dz, p[1])
        return n.astype(np.float32), self.tex(u, v)


@dataclass
class _Room:
    """Axis-aligned room: floor y=0, ceiling y=height, walls at x=+-width/2, z=front and z=back."""

    width: float
    height: float
    back: float
    front: float
    floor_tex: Material
    wall_tex: Material
    ceiling_tex: Material
    baseboard: float
    baseboard_c: np.ndarray


# ---------------------------------------------------------------------------- the scene


def _clear_of_camera(obj: _Box | _Cylinder | _Sphere, cam: np.ndarray, room: _Room) -> bool:
    """True when the object's footprint keeps a margin from the camera, lies in front of it, and
    stays inside the room."""
    if isinstance(obj, _Box):
        lc = _rot_y(-obj.yaw) @ np.array([cam[0] - obj.centre[0], 0.0, cam[2] - obj.centre[1]])
        gap = np.hypot(max(abs(lc[0]) - obj.half[0], 0), max(abs(lc[2]) - obj.half[2], 0))
        x, z, reach = obj.centre[0], obj.centre[1], float(np.hypot(obj.half[0], obj.half[2]))
    elif isinstance(obj, _Cylinder):
        x, z, reach = obj.centre[0], obj.centre[1], obj.r
        gap = np.hypot(cam[0] - x, cam[2] - z) - reach
    else:
        x, z, reach = obj.centre[0], obj.centre[2], obj.r
        gap = np.hypot(cam[0] - x, cam[2] - z) - reach
    inside = (abs(x) + reach * 0.5 < room.width / 2) and (room.front < z < room.back)
    return bool(gap > 0.7 and z > cam[2] + 0.9 and inside)


def _objects(rng: np.random.Generator, room: _Room, cams: list[np.ndarray]) -> list:
    """Furniture and props clear of every camera position: wall-side cabinets/beds/pictures, free
    tables, boxes, balls, columns."""
    objs: list = []
    hw = room.width / 2
    z_range = (max(cam[2] for cam in cams) + 1.2, room.back - 0.3)
    kinds = rng.choice(
        ["cabinet", "table", "bed", "box", "picture", "ball", "column"],
        size=int(rng.integers(3, 11)),
        p=[0.22, 0.2, 0.08, 0.18, 0.14, 0.1, 0.08],
    )
    tables: list[_Box] = []
    for kind in kinds:
        for _ in range(12):
            obj = _make_object(rng, str(kind), room, hw, z_range, tables)
            if obj is not None and all(_clear_of_camera(obj, cam, room) for cam in cams):
                objs.append(obj)
                if kind == "table":
                    tables.append(obj)
                break
    return objs


def _against_wall(
    rng: np.random.Generator, hw: float, back: float, z_range: tuple, sx: float, sz: float
) -> tuple[np.ndarray, float]:
    """Footprint centre and yaw for a box of size (sx, sz) placed against a side or back wall."""
    wall = rng.integers(0, 3)
    if wall == 2:
        x = rng.uniform(-hw + sx / 2, hw - sx / 2) if hw > sx / 2 else 0.0
        return np.array([x, back - sz / 2 - 0.01]), 0.0
    sign = -1 if wall == 0 else 1
    z = rng.uniform(*z_range)
    return np.array([sign * (hw - sz / 2 - 0.01), z]), np.pi / 2


def _make_object(
    rng: np.random.Generator, kind: str, room: _Room, hw: float, z_range: tuple, tables: list
) -> _Box | _Sphere | _Cylinder | None:
    """One object of ``kind`` with random size, pose and texture (None if it cannot fit)."""
    tex = _material(rng, str(rng.choice(["plain", "stripes", "checker", "blotches", "planks"])))
    if kind == "cabinet":
        sx, sy, sz = rng.uniform(0.4, 1.6), rng.uniform(0.5, 2.1), rng.uniform(0.35, 0.65)
        centre, yaw = _against_wall(rng, hw, room.back, z_range, sx, sz)
        return _Box(centre, np.array([sx, sy, sz]) / 2, yaw + rng.normal(0, 0.03), 0.0, kind, tex)
    if kind == "bed":
        sx, sy, sz = rng.uniform(1.4, 2.0), rng.uniform(0.35, 0.6), rng.uniform(0.9, 1.8)
        centre, yaw = _against_wall(rng, hw, room.back, z_range, sx, sz)
        return _Box(centre, np.array([sx, sy, sz]) / 2, yaw, 0.0, kind, tex)
    if kind == "picture":
        sx, sy = rng.uniform(0.3, 1.2), rng.uniform(0.3, 0.9)
        centre, yaw = _against_wall(rng, hw, room.back, z_range, sx, 0.03)
        base = rng.uniform(1.0, min(2.0, room.height - sy - 0.1))
        art = _material(rng, str(rng.choice(["blotches", "checker", "stripes"])))
        return _Box(centre, np.array([sx, sy, 0.03]) / 2, yaw, base, kind, art)
    x, z = rng.uniform(-hw + 0.3, hw - 0.3), rng.uniform(*z_range)
    if kind == "table":
        sx, sy, sz = rng.uniform(0.6, 1.8), rng.uniform(0.4, 0.8), rng.uniform(0.5, 1.0)
        return _Box(np.array([x, z]), np.array([sx, sy, sz]) / 2, rng.uniform(0, np.pi), 0.0, kind, tex)
    on = tables[int(rng.integers(len(tables)))] if tables and rng.random() < 0.5 else None
    base = 2 * on.half[1] if on is not None else 0.0
    if on is not None:
        lx, lz = rng.uniform(-0.5, 0.5, 2) * np.minimum(on.half[[0, 2]], 0.3)
        x, _, z = np.array([on.centre[0], 0.0, on.centre[1]]) + _rot_y(on.yaw) @ [lx, 0.0, lz]
    if kind == "box":
        s = rng.uniform(0.2, 0.6, 3)
        return _Box(np.array([x, z]), s / 2, rng.uniform(0, np.pi), base, kind, tex)
    if kind == "ball":
        r = rng.uniform(0.1, 0.4)
        return _Sphere(np.array([x, base + r, z]), r, kind, tex)
    if on is not None:
        return None
    return _Cylinder(np.array([x, z]), rng.uniform(0.1, 0.35), rng.uniform(0.4, room.height), kind, tex)


def _room(rng: np.random.Generator) -> _Room:
    """Room size and surface materials."""
    return _Room(
        width=rng.uniform(3.0, 7.0),
        height=rng.uniform(2.4, 3.2),
        back=rng.uniform(3.0, 10.0),
        front=-1.0,
        floor_tex=_material(rng, str(rng.choice(["tiles", "planks", "plain"]))),
        wall_tex=_material(rng, str(rng.choice(["plain", "stripes", "bricks", "blotches"]))),
        ceiling_tex=_material(rng, "plain"),
        baseboard=rng.uniform(0.05, 0.14),
        baseboard_c=_colour(rng, 0.1, 0.9, 0.2),
    )


def _room_hits(room: _Room, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the room's inside and the surface id (0 floor, 1 ceiling, 2-5 walls)."""
    lo = np.array([-room.width / 2, 0.0, room.front])
    hi = np.array([room.width / 2, room.height, room.back])
    safe = np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
    bound = np.where(d > 0, hi[:, None], lo[:, None])
    t = ((bound - o[:, None]) / safe).astype(np.float32)
    axis = np.argmin(t, axis=0)
    t_min = np.take_along_axis(t, axis[None], 0)[0]
    positive = np.take_along_axis(d, axis[None], 0)[0] > 0
    ids = np.select(
        [axis == 1, axis == 0], [np.where(positive, 1, 0), np.where(positive, 3, 2)], np.where(positive, 4, 5)
    )
    return t_min, ids


def _room_surface(room: _Room, sid: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normal and albedo of room surface ``sid`` at points ``p``."""
    normals = {0: (0, 1, 0), 1: (0, -1, 0), 2: (1, 0, 0), 3: (-1, 0, 0), 4: (0, 0, -1), 5: (0, 0, 1)}
    n = np.repeat(np.array(normals[sid], np.float32)[:, None], p.shape[1], axis=1)
    if sid == 0:
        return n, room.floor_tex(p[0], p[2])
    if sid == 1:
        return n, room.ceiling_tex(p[0], p[2])
    u = p[2] if sid in (2, 3) else p[0]
    albedo = room.wall_tex(u, p[1])
    return n, np.where((p[1] < room.baseboard)[:, None], room.baseboard_c, albedo)


def _blobs(rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Boolean mask of a few random ellipses covering about ``fraction`` of the frame."""
    h, w = FRAME_SHAPE
    mask = np.zeros(FRAME_SHAPE, bool)
    k = int(rng.integers(2, 9))
    for area in rng.dirichlet(np.ones(k)) * fraction * h * w:
        aspect = rng.uniform(0.4, 2.5)
        ry = max(np.sqrt(area / (np.pi * aspect)), 1.0)
        rx = max(aspect * ry, 1.0)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = int(max(cy - ry, 0)), int(min(cy + ry + 1, h))
        x0, x1 = int(max(cx - rx, 0)), int(min(cx + rx + 1, w))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return mask


def _raw_depth(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """Kinect-like raw depth: depth-dependent noise, shadows at depth edges, extra holes."""
    noisy = depth + rng.normal(0, 1, depth.shape).astype(np.float32) * (0.0012 + 0.0019 * (depth - 0.4) ** 2)
    jump = np.zeros(FRAME_SHAPE, bool)
    jump[:, 1:] = np.abs(np.diff(depth, axis=1)) > 0.05 * depth[:, 1:]
    shadow = jump.copy()
    for s in range(1, int(rng.integers(2, 7))):
        shadow[:, s:] |= jump[:, :-s]
    holes = shadow | _blobs(rng, rng.uniform(0.01, 0.05)) | (depth == 0)
    return np.where(holes, 0.0, noisy).astype(np.float32)


@dataclass
class _Scene:
    """One room as every view of it sees it: geometry, materials, furniture, the ceiling light,
    and the camera positions its views are taken from."""

    room: _Room
    cams: list[np.ndarray]
    objs: list
    ceiling_light: tuple[np.ndarray, float]


def _scene(rng: np.random.Generator, views: int) -> _Scene:
    """A random room with ``views`` camera positions (standing in the front half, at eye height)."""
    room = _room(rng)
    cams = [
        np.array([rng.uniform(-0.3, 0.3) * room.width, rng.uniform(1.0, 1.7), rng.uniform(0.0, 0.6)])
        for _ in range(views)
    ]
    light = (
        np.array(
            [rng.uniform(-0.4, 0.4) * room.width, room.height - 0.15, rng.uniform(1.0, max(room.back - 0.5, 1.5))]
        ),
        rng.uniform(0.5, 1.1),
    )
    return _Scene(room, cams, _objects(rng, room, cams), light)


def _render(scene: _Scene, view: int, rng: np.random.Generator) -> Rendered:
    """Ray-cast view ``view`` of ``scene`` (its camera position, an orientation, exposure and
    sensor noise from ``rng``): image, depth, raw depth, labels and instances."""
    h, w = FRAME_SHAPE
    room, cam, objs = scene.room, scene.cams[view], scene.objs
    rot = (
        _rot_y(rng.uniform(-0.3, 0.3))
        @ _rot_x(rng.uniform(-0.05, 0.3))
        @ _rot_z(rng.normal(0, 0.03))
        @ np.diag([1.0, -1.0, 1.0])
    )
    d = (rot @ _camera_rays()).astype(np.float32)

    t, ids = _room_hits(room, cam, d)
    for k, obj in enumerate(objs):
        tk = obj.intersect(cam, d)
        closer = tk < t
        t = np.where(closer, tk, t)
        ids = np.where(closer, 6 + k, ids)

    p = (cam[:, None] + d * t).astype(np.float32)
    normal = np.empty((3, h * w), np.float32)
    albedo = np.empty((h * w, 3), np.float32)
    cls = np.array([_CLS["floor"], _CLS["ceiling"]] + [_CLS["wall"]] * 4 + [_CLS[o.cls] for o in objs], np.uint16)
    inst = np.ones(len(cls), np.uint16)
    inst[2:6] = np.arange(1, 5)
    for k, obj in enumerate(objs):
        inst[6 + k] = 1 + sum(o.cls == obj.cls for o in objs[:k])
    for sid in np.unique(ids):
        sel = np.flatnonzero(ids == sid)
        pts = p[:, sel]
        n, a = _room_surface(room, int(sid), pts) if sid < 6 else objs[sid - 6].surface(pts)
        normal[:, sel] = n
        albedo[sel] = a

    image = _shade(rng, scene, cam, p, normal, albedo).reshape(h, w, 3)
    depth = t.reshape(h, w)
    invalid = (depth > MAX_DEPTH) | _blobs(rng, rng.uniform(0.005, 0.02))
    depth = np.where(invalid, 0.0, np.maximum(depth, MIN_DEPTH)).astype(np.float32)
    return Rendered(
        image=image,
        depth=depth,
        raw_depth=_raw_depth(rng, depth),
        labels=cls[ids].reshape(h, w),
        instances=inst[ids].reshape(h, w),
    )


def _shade(
    rng: np.random.Generator, scene: _Scene, cam: np.ndarray, p: np.ndarray, normal: np.ndarray, albedo: np.ndarray
) -> np.ndarray:
    """Lambertian light from the room's ceiling light and a light at the camera with distance
    falloff, then the sensor."""
    lights = [
        (*scene.ceiling_light, 2.5),
        (cam + np.array([0.1, 0.08, 0.0]), rng.uniform(0.6, 1.1), 1.8),
    ]
    shade = np.full(p.shape[1], rng.uniform(0.06, 0.2), np.float32)
    for pos, power, r0 in lights:
        lv = pos[:, None].astype(np.float32) - p
        r2 = np.einsum("ij,ij->j", lv, lv)
        cos = np.maximum(np.einsum("ij,ij->j", normal, lv) / np.sqrt(r2), 0)
        shade += np.float32(power * r0**2) * cos / (r0**2 + r2)
    tint = np.float32(1) + rng.normal(0, 0.04, 3).astype(np.float32)
    linear = albedo * (shade[:, None] * tint)
    linear *= np.float32(rng.uniform(0.75, 0.95) / max(np.percentile(linear[::13], 98), 1e-3))
    img = np.clip(linear, 0, 1) ** np.float32(1 / 2.2) * 255
    img += rng.normal(0, 1.5, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def scene_name(seed: int, i: int, views_per_room: int) -> str:
    """The scene (room) of frame ``i``: frames ``r * views_per_room`` onwards are views of room ``r``."""
    return f"synth_s{seed}_room{i // views_per_room:05d}"


def _render_index(seed: int, views_per_room: int, i: int) -> Rendered:
    """Frame ``i`` of a dataset with ``seed``: view ``i % views_per_room`` of room
    ``i // views_per_room``; depends on nothing else (the room is rebuilt from its own seed)."""
    room, view = divmod(i, views_per_room)
    return _render(
        _scene(np.random.default_rng([seed, room]), views_per_room), view, np.random.default_rng([seed, room, view])
    )


def _frames(seed: int, n: int, views_per_room: int, workers: int, stack: ExitStack) -> Iterator[Rendered]:
    """Rendered frames 0..n-1 in order, from this process or a spawn pool of ``workers``."""
    job = partial(_render_index, seed, views_per_room)
    if workers == 1:
        return map(job, range(n))
    pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, n)))
    return pool.imap(job, range(n))


def generate_dataset(
    out: str | os.PathLike,
    n: int,
    *,
    views_per_room: int = 3,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``n`` frames, ``views_per_room`` views of each room (the last room may have fewer),
    into a labelled-file twin at ``out`` (atomic: temp file, then rename)."""
    out = Path(out)
    if n < 1:
        raise ValueError(f"generate_dataset: n={n}; expected at least 1 frame")
    if views_per_room < 1:
        raise ValueError(f"generate_dataset: views_per_room={views_per_room}; expected at least 1")
    if workers < 1:
        raise ValueError(f"generate_dataset: workers={workers}; expected at least 1")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: directory {out.parent} does not exist; create it first")
    if out.is_dir():
        raise IsADirectoryError(f"cannot write {out}: it is a directory; expected a file path such as synth.mat")
    start = time.perf_counter()
    scene_names = [scene_name(seed, i, views_per_room) for i in range(n)]
    with ExitStack() as stack:
        writer = stack.enter_context(NYUFileWriter(out, n, CLASS_NAMES, scene_names))
        for i, frame in enumerate(_frames(seed, n, views_per_room, workers, stack)):
            writer.put(i, frame)
            if progress is not None:
                progress(i + 1, n)
    elapsed = time.perf_counter() - start
    log.info(
        "wrote %d synthetic frames of %d rooms (seed %d, %d workers) to %s in %.1f s (%.2f s/frame)",
        n,
        len(set(scene_names)),
        seed,
        workers,
        out,
        elapsed,
        elapsed / n,
    )
    return out
