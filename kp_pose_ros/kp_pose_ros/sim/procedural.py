"""Procedural object instances of known categories with random dimensions, as no package here ships several instances
per category: rigid ones for the category-level pipeline (NOCS / MK-Pose: pose and metric size of unseen instances) and
articulated ones for PAGE (per-part poses and joint states).

Rigid categories (CATEGORIES), trimesh meshes with vertex colours in the NOCS canonical frame: upright along +y, origin
at the centre of the tight bounding box, so `size_m` (the bbox extents, x y z) is the NOCS metric size; the rotational
symmetry axis of bottle, bowl, can (and mug but for its handle, which points along +x) is y.

Articulated categories (ARTICULATED_CATEGORIES), written as a URDF with one OBJ mesh (vertex colours) per link and box
collision shapes, in ROS's z-up convention: the base link frame is at the centre of the closed object's bounding box
(every joint at its lower limit, handles included), z up, front (drawer fronts, doors, laptop screen side) towards +x;
`size_m` is that closed bbox's extents. Every joint hangs off the base link with an identity-rotation origin, so its
URDF axis is also its axis in the object frame. Parts are boxes: exact collision shapes, and flat-shaded panels are
what cabinets and laptops are made of.

Parts (URDF links, base first; pybullet link index k - 1 and written part_id k for the k-th) and joints, all closed
at their lower limit 0; ARTICULATED_PARTS holds the fixed lists:
- cabinet: 'body', then per section k (1-3, bottom to top) 'drawer_<k>' (prismatic along +x) or 'door_<k>' (revolute
  about +-z on its hinge edge, the free edge swinging out towards +x); the only category whose parts vary.
- laptop: 'base', 'lid' (revolute about -y on the back top edge: opening lifts the front edge).
- drawer: 'body', 'drawer_0', 'drawer_1', 'drawer_2' (bottom to top; prismatic along +x, open up to 0.6-0.9 of the
  drawer's inner depth): a chest built as a cabinet of three drawer sections.
- eyeglasses: 'frame', 'temple_left' (+y end, about -z), 'temple_right' (-y end, about +z): 0 = folded behind the
  front, 1.5-1.7 rad = open, the free ends towards -x; the left temple lies 1 mm above the right one.
- scissors: 'blade_a', 'blade_b' (above blade_a; revolute about +z through the pivot, 0 = closed, 0.6-0.9 rad =
  open, blade_b's tip swinging towards +y); tips towards +x, lying flat.
Joints are named '<child link>_joint'. No two parts interpenetrate when closed; moving parts may meet at some states
of two joints (a temple opened through the other, folded one): sim.procedural_scene draws states clear of that.

Determinism and splits: an instance is a function of (category, seed) alone. Seeds in TRAIN_SEEDS give the training
instances, seeds in TEST_SEEDS the held-out ones (never drawn in training): `split_of(seed)` and `draw_seeds`.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import trimesh

from kp_pose_ros.core.atomic_file import atomic_open

CATEGORIES = ('bottle', 'bowl', 'can', 'mug', 'box')
ARTICULATED_CATEGORIES = ('cabinet', 'laptop', 'drawer', 'eyeglasses', 'scissors')
# The fixed part list (URDF link order, base first) of every articulated category but 'cabinet', whose parts vary per
# instance ('body', then one 'drawer_<k>' or 'door_<k>' per section k, bottom to top). Written data number parts in
# this order: part_id k = the k-th name (pybullet link index k - 1, the base link -1).
ARTICULATED_PARTS = {
    'laptop': ('base', 'lid'),
    'drawer': ('body', 'drawer_0', 'drawer_1', 'drawer_2'),
    'eyeglasses': ('frame', 'temple_left', 'temple_right'),
    'scissors': ('blade_a', 'blade_b'),
}
TRAIN_SEEDS = range(0, 1_000_000)
TEST_SEEDS = range(1_000_000, 2_000_000)
SPLITS = {'train': TRAIN_SEEDS, 'test': TEST_SEEDS}
_SECTIONS = 48
_PANEL_GAP_M = 0.002  # between neighbouring cabinet fronts
_DECAL_M = 0.0008     # thickness of screen / keyboard panels laid on a laptop's faces


def split_of(seed: int) -> str:
    for name, seeds in SPLITS.items():
        if seed in seeds:
            return name
    raise ValueError(f'seed {seed} is in no split ({ {k: (v.start, v.stop) for k, v in SPLITS.items()} })')


def draw_seeds(rng: np.random.Generator, split: str, count: int) -> list[int]:
    """`count` instance seeds of a split (with possible repeats, as a layout may hold two of one instance)."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {tuple(SPLITS)}, got {split!r}')
    seeds = SPLITS[split]
    return [int(s) for s in rng.integers(seeds.start, seeds.stop, size=count)]


def _instance_rng(category: str, seed: int) -> np.random.Generator:
    if int(seed) != seed or seed < 0:
        raise ValueError(f'instance seeds are integers >= 0, got {seed}')
    return np.random.default_rng([zlib.crc32(category.encode()), int(seed)])


def _colour(rng: np.random.Generator, low: float = 0.1, high: float = 0.95) -> np.ndarray:
    return np.append(rng.uniform(low, high, 3) * 255.0, 255.0).astype(np.uint8)


def _painted(mesh: trimesh.Trimesh, colours: np.ndarray) -> trimesh.Trimesh:
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.asarray(colours, np.uint8))
    return mesh


# ---------------------------------------------------------------------------------------------- rigid categories
@dataclass(frozen=True)
class CategoryInstance:
    """A rigid instance in the NOCS canonical frame (metres, +y up, origin at the bbox centre), vertex-coloured."""

    category: str
    seed: int
    mesh: trimesh.Trimesh

    @property
    def name(self) -> str:
        return f'{self.category}_{self.seed:07d}'

    @property
    def size_m(self) -> np.ndarray:
        """NOCS metric size: the tight bbox extents (x, y, z) in the canonical frame."""
        return self.mesh.extents.copy()

    @property
    def split(self) -> str:
        return split_of(self.seed)


def _revolved(profile, bands, rng) -> trimesh.Trimesh:
    """A solid of revolution about z of a closed (radius, z) profile starting and ending on the axis, coloured by
    height: `bands` lists (z_low, z_high, rgba) painted over the body colour."""
    mesh = trimesh.creation.revolve(np.asarray(profile, float), sections=_SECTIONS)
    colours = np.tile(_colour(rng), (len(mesh.vertices), 1))
    for lo, hi, rgba in bands:
        colours[(mesh.vertices[:, 2] >= lo) & (mesh.vertices[:, 2] <= hi)] = rgba
    return _painted(mesh, colours)


def _cup_profile(radius_bottom, radius_top, height, wall, floor, bulge=0.0, points=12):
    """Outer wall up to the rim, inner wall back down to a floor of thickness `floor`; `bulge` rounds the outer wall
    outwards (bowls)."""
    s = np.linspace(0.0, 1.0, points)
    outer_r = radius_bottom + (radius_top - radius_bottom) * np.sin(s * math.pi / 2) ** (1.0 - bulge)
    outer = np.column_stack([outer_r, s * height])
    inner_r = np.maximum(outer_r[::-1] - wall, 0.3 * radius_bottom)
    inner = np.column_stack([inner_r, floor + (height - floor) * s[::-1]])
    return np.vstack([[0.0, 0.0], outer, inner, [0.0, floor]])


def _bottle(rng):
    height, radius = rng.uniform(0.16, 0.32), rng.uniform(0.028, 0.045)
    shoulder, neck = rng.uniform(0.5, 0.72) * height, rng.uniform(0.3, 0.45) * radius
    neck_start = shoulder + rng.uniform(0.12, 0.22) * height
    s = np.linspace(0.0, 1.0, 8)
    shoulder_curve = np.column_stack([neck + (radius - neck) * np.cos(s * math.pi / 2),
                                      shoulder + (neck_start - shoulder) * s])
    profile = np.vstack([[0.0, 0.0], [0.92 * radius, 0.0], [radius, 0.01], shoulder_curve,
                         [neck, height - 0.02], [neck * 1.15, height - 0.02], [neck * 1.15, height], [0.0, height]])
    bands = [(rng.uniform(0.1, 0.25) * height, rng.uniform(0.35, 0.5) * height, _colour(rng)),
             (height - 0.02, height, _colour(rng))]
    return _revolved(profile, bands, rng)


def _bowl(rng):
    rim = rng.uniform(0.06, 0.11)
    profile = _cup_profile(rng.uniform(0.35, 0.55) * rim, rim, rng.uniform(0.35, 0.6) * rim,
                           rng.uniform(0.004, 0.008), 0.008, bulge=rng.uniform(0.3, 0.7))
    return _revolved(profile, [(0.0, 0.004, _colour(rng))], rng)


def _can(rng):
    radius, height = rng.uniform(0.025, 0.045), rng.uniform(0.07, 0.16)
    profile = [[0.0, 0.0], [0.85 * radius, 0.0], [radius, 0.008], [radius, height - 0.008], [0.9 * radius, height],
               [0.85 * radius, height], [0.83 * radius, height - 0.004], [0.0, height - 0.004]]
    metal = np.array([190, 190, 195, 255], np.uint8)
    return _revolved(profile, [(0.0, 0.008, metal), (height - 0.008, height, metal)], rng)


def _handle(major: float, minor: float, sections: int = 24, ring: int = 12) -> trimesh.Trimesh:
    """The outer half of a torus in the xz plane around the origin (x >= 0), a tube with open ends on x = 0."""
    phi = np.linspace(-math.pi / 2, math.pi / 2, sections + 1)[:, None]
    theta = np.linspace(0.0, 2.0 * math.pi, ring, endpoint=False)[None, :]
    radial = major + minor * np.cos(theta)
    shape = (sections + 1, ring)
    vertices = np.stack([radial * np.cos(phi), np.broadcast_to(minor * np.sin(theta), shape),
                         radial * np.sin(phi)], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(sections), np.arange(ring), indexing='ij')
    a, b = i * ring + j, i * ring + (j + 1) % ring
    c, d = a + ring, b + ring
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return trimesh.Trimesh(vertices, faces, process=False)


def _mug(rng):
    radius, height = rng.uniform(0.035, 0.055), rng.uniform(0.07, 0.12)
    wall = rng.uniform(0.003, 0.006)
    cup = _revolved(_cup_profile(radius, radius, height, wall, 0.008, points=2), [], rng)
    # Its open ends sit inside the straight wall (x = radius - wall / 2), so the handle reads as one piece.
    handle = _handle(rng.uniform(0.25, 0.38) * height, rng.uniform(0.06, 0.1) * height)
    handle.apply_translation([radius - wall / 2, 0.0, height / 2])
    _painted(handle, np.tile(cup.visual.vertex_colors[0], (len(handle.vertices), 1)))
    return trimesh.util.concatenate([cup, handle])


def _box(rng):
    mesh = trimesh.creation.box(extents=[rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25), rng.uniform(0.03, 0.22)])
    mesh.unmerge_vertices()  # three vertices of its own per face: a colour per side
    sides = np.tile(_colour(rng), (len(mesh.faces), 1))
    label = np.eye(3)[int(rng.integers(3))] * (1.0 if rng.random() < 0.5 else -1.0)
    sides[np.isclose(mesh.face_normals @ label, 1.0)] = _colour(rng)
    return _painted(mesh, np.repeat(sides, 3, axis=0))


_RIGID_BUILDERS = {'bottle': _bottle, 'bowl': _bowl, 'can': _can, 'mug': _mug, 'box': _box}


def category_instance(category: str, seed: int) -> CategoryInstance:
    """The instance `seed` of a rigid category, in the NOCS canonical frame."""
    if category not in _RIGID_BUILDERS:
        raise ValueError(f'unknown category {category!r}; categories: {CATEGORIES}')
    mesh = _RIGID_BUILDERS[category](_instance_rng(category, seed))  # built upright along z
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))  # z up -> y up
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    return CategoryInstance(category, int(seed), mesh)


# ---------------------------------------------------------------------------------------------- articulated categories
@dataclass
class _Box:
    centre: tuple[float, float, float]
    extents: tuple[float, float, float]
    rgba: np.ndarray
    collides: bool = True


@dataclass
class _Link:
    name: str
    boxes: list[_Box]
    joint: dict | None = None  # name, type, origin (in the base link frame), axis, lower, upper


@dataclass(frozen=True)
class ArticulatedAsset:
    """An articulated instance written as `urdf` (+ <name>_<link>.obj per link beside it, named in it relatively)."""

    category: str
    seed: int
    urdf: Path
    size_m: np.ndarray  # closed-state bbox extents (x depth, y width, z height) in the base link frame

    @property
    def name(self) -> str:
        return f'{self.category}_{self.seed:07d}'

    @property
    def split(self) -> str:
        return split_of(self.seed)


def _chest(rng, count: int | None, doors: bool) -> list[_Link]:
    """A carcass open at the front (+x), split into `count` stacked sections (1-3 drawn if None), bottom to top, each
    a drawer (prismatic along +x, closed with its front on the carcass, opening up to 0.6-0.9 of its inner depth) or,
    where `doors` and the section is tall enough, a door (revolute about a vertical hinge on its left or right edge);
    fronts are overlay panels with a handle bar. Links 'body', then 'drawer_<k>' / 'door_<k>' by section."""
    depth, width, height = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.9), rng.uniform(0.45, 1.0)
    t = rng.uniform(0.015, 0.025)
    body, front_rgba, handle_rgba = _colour(rng), _colour(rng), _colour(rng, 0.55, 0.8)
    x0, x1, y0, y1 = -depth / 2, depth / 2, -width / 2, width / 2
    carcass = [_Box((0, y0 + t / 2, 0), (depth, t, height), body), _Box((0, y1 - t / 2, 0), (depth, t, height), body),
               _Box((0, 0, height / 2 - t / 2), (depth, width - 2 * t, t), body),
               _Box((0, 0, -height / 2 + t / 2), (depth, width - 2 * t, t), body),
               _Box((x0 + t / 2, 0, 0), (t, width - 2 * t, height - 2 * t), body)]
    count = int(rng.integers(1, 4)) if count is None else count
    shares = rng.uniform(0.6, 1.4, count)
    cuts = -height / 2 + height * np.concatenate([[0.0], np.cumsum(shares) / shares.sum()])
    links = [_Link('body', carcass)]
    front_t, gap = t, _PANEL_GAP_M
    for k in range(count):
        z0, z1 = cuts[k], cuts[k + 1]
        if k > 0:
            carcass.append(_Box((t / 2, 0, z0), (depth - t, width - 2 * t, t), body))
        panel_h, zc = z1 - z0 - 2 * gap, (z0 + z1) / 2
        bar = (0.02, min(0.3 * width, 0.25), 0.012)
        if doors and (panel_h > 0.35 or (panel_h > 0.2 and rng.random() < 0.5)):  # door, hinged at its back corner
            side = -1.0 if rng.random() < 0.5 else 1.0  # hinge on the -y or +y edge
            boxes = [_Box((x1 + front_t / 2, 0, zc), (front_t, width - 2 * gap, panel_h), front_rgba),
                     _Box((x1 + front_t + 0.01, -side * (width / 2 - 0.05), zc),
                          (0.02, 0.012, min(0.6 * panel_h, 0.25)), handle_rgba)]
            # About +z (hinge at +y) or -z (hinge at -y), opening swings the free edge out towards +x.
            joint = dict(name=f'door_{k}_joint', type='revolute', origin=(x1, side * (width / 2 - gap), zc),
                         axis=(0.0, 0.0, side), lower=0.0, upper=float(rng.uniform(1.4, 2.0)))
            links.append(_Link(f'door_{k}', boxes, joint))
            continue
        floor = z0 + (t if k == 0 else t / 2)
        box_h = 0.75 * (z1 - (t if k == count - 1 else t / 2) - floor)
        zb = floor + 0.003 + box_h / 2
        inner_d, inner_w, tt = depth - 2 * t - 0.01, width - 2 * t - 0.01, t / 2
        boxes = [_Box((x1 + front_t / 2, 0, zc), (front_t, width - 2 * gap, panel_h), front_rgba),
                 _Box((x1 + front_t + bar[0] / 2, 0, zc + 0.2 * panel_h), bar, handle_rgba),
                 _Box((x1 - inner_d / 2, 0, zb - box_h / 2 + tt / 2), (inner_d, inner_w, tt), body),
                 _Box((x1 - inner_d / 2, -inner_w / 2 + tt / 2, zb), (inner_d, tt, box_h), body),
                 _Box((x1 - inner_d / 2, inner_w / 2 - tt / 2, zb), (inner_d, tt, box_h), body),
                 _Box((x1 - inner_d + tt / 2, 0, zb), (tt, inner_w, box_h), body)]
        joint = dict(name=f'drawer_{k}_joint', type='prismatic', origin=(x1, 0.0, zc), axis=(1.0, 0.0, 0.0),
                     lower=0.0, upper=float(rng.uniform(0.6, 0.9) * inner_d))
        links.append(_Link(f'drawer_{k}', boxes, joint))
    return links


def _cabinet(rng) -> list[_Link]:
    """1-3 sections, each a drawer or a door (parts vary per instance: 'body', then 'drawer_<k>' / 'door_<k>')."""
    return _chest(rng, None, True)


def _drawer(rng) -> list[_Link]:
    """A chest of exactly three drawers (ARTICULATED_PARTS['drawer'], bottom to top)."""
    return _chest(rng, len(ARTICULATED_PARTS['drawer']) - 1, False)


def _laptop(rng) -> list[_Link]:
    """A base slab with a keyboard panel and a lid hinged on the base's back top edge (revolute about -y: opening
    lifts the lid's front edge), with a screen panel on its inner face."""
    depth, width = rng.uniform(0.19, 0.28), rng.uniform(0.28, 0.40)
    base_t, lid_t = rng.uniform(0.012, 0.022), rng.uniform(0.005, 0.009)
    shell, dark = _colour(rng, 0.1, 0.85), _colour(rng, 0.0, 0.15)
    margin = rng.uniform(0.01, 0.025)
    base = [_Box((0, 0, base_t / 2), (depth, width, base_t), shell),
            _Box((0.1 * depth, 0, base_t + _DECAL_M / 2), (0.45 * depth, width - 2 * margin, _DECAL_M), dark, False)]
    lid = [_Box((0, 0, base_t + lid_t / 2), (depth, width, lid_t), shell),
           _Box((0, 0, base_t - _DECAL_M / 2), (depth - 2 * margin, width - 2 * margin, _DECAL_M), dark, False)]
    joint = dict(name='lid_joint', type='revolute', origin=(-depth / 2, 0.0, base_t), axis=(0.0, -1.0, 0.0),
                 lower=0.0, upper=float(rng.uniform(1.9, 2.3)))
    names = ARTICULATED_PARTS['laptop']
    return [_Link(names[0], base), _Link(names[1], lid, joint)]


def _eyeglasses(rng) -> list[_Link]:
    """A front (two rimmed lenses, a bridge, end pieces reaching back to the hinges) in the yz plane facing +x, and two
    temples hinged behind its outer ends about vertical axes: 'temple_left' (+y end, about -z) and 'temple_right' (-y
    end, about +z), both folded behind the front at 0 (pointing inwards along the front) and open at 1.5-1.7 rad
    (pointing towards -x, a little splayed past 90 degrees). The left temple lies 1 mm above the right one; each ends
    in a tip bent down to the front's lower edge (open glasses stand on their rims and tips), 0.6 mm behind where the
    other temple lies folded. Closed, nothing interpenetrates; a temple opening while the other is (nearly) folded, or
    both half open, can run into the other's tip (sim.procedural_scene draws states clear of that)."""
    base, left, right = ARTICULATED_PARTS['eyeglasses']
    width, lens_h = rng.uniform(0.12, 0.15), rng.uniform(0.028, 0.05)
    bridge, rim, thick = rng.uniform(0.014, 0.022), rng.uniform(0.002, 0.0045), rng.uniform(0.003, 0.006)
    length = float(np.clip(width * rng.uniform(0.93, 1.04), 0.12, 0.15))
    temple_w, temple_h, lug = rng.uniform(0.002, 0.0035), rng.uniform(0.003, 0.005), rng.uniform(0.004, 0.008)
    tip_l, gap, clear = rng.uniform(0.003, 0.006), 0.001, 0.0006
    frame_rgba = _colour(rng, 0.05, 0.9)
    temple_rgba = frame_rgba if rng.random() < 0.7 else _colour(rng, 0.05, 0.9)
    lens_rgba = np.append(rng.uniform(0.03, 0.3, 3) * 255.0, 255.0).astype(np.uint8)
    lens_w = (width - bridge) / 2  # one rimmed lens, rims included
    hinge_z = lens_h - max(rng.uniform(0.2, 0.35) * lens_h, temple_h + gap + rim)
    hinge_x = -thick - lug
    front = [_Box((-thick / 2, 0.0, lens_h - rim - rng.uniform(0.0, 0.25) * lens_h),
                  (thick, bridge + rim, rng.uniform(0.0025, 0.004)), frame_rgba)]
    for side in (1.0, -1.0):
        yc = side * (bridge / 2 + lens_w / 2)
        front += [_Box((-thick / 2, yc, lens_h - rim / 2), (thick, lens_w, rim), frame_rgba),
                  _Box((-thick / 2, yc, rim / 2), (thick, lens_w, rim), frame_rgba),
                  _Box((-thick / 2, side * (width / 2 - rim / 2), lens_h / 2), (thick, rim, lens_h - 2 * rim),
                       frame_rgba),
                  _Box((-thick / 2, side * (bridge / 2 + rim / 2), lens_h / 2), (thick, rim, lens_h - 2 * rim),
                       frame_rgba),
                  _Box((-thick / 2, yc, lens_h / 2), (0.4 * thick, lens_w - 2 * rim, lens_h - 2 * rim), lens_rgba),
                  _Box((-thick - lug / 2, side * (width / 2 - temple_w / 2), hinge_z),
                       (lug, temple_w, 2 * temple_h + gap), frame_rgba)]
    links = [_Link(base, front)]
    for name, side, z0 in ((left, 1.0, hinge_z + gap / 2), (right, -1.0, hinge_z - gap / 2 - temple_h)):
        hinge_y = side * (width / 2 - temple_w)
        free_y = hinge_y - side * length  # the free end, folded: across the front, towards the other side
        tip_x = hinge_x - temple_w - clear - temple_w / 2
        boxes = [_Box((hinge_x - temple_w / 2, (hinge_y + free_y) / 2, z0 + temple_h / 2), (temple_w, length, temple_h),
                      temple_rgba),
                 # the bend (in the temple's own height) and the tip down to the front's lower edge
                 _Box((hinge_x - temple_w - (clear + temple_w) / 2, free_y + side * tip_l / 2, z0 + temple_h / 2),
                      (clear + temple_w, tip_l, temple_h), temple_rgba),
                 _Box((tip_x, free_y + side * tip_l / 2, z0 / 2), (temple_w, tip_l, z0), temple_rgba)]
        # Folded along -side * y behind the front; about -side * z, opening swings the free end round to -x.
        joint = dict(name=f'{name}_joint', type='revolute', origin=(hinge_x, hinge_y, hinge_z),
                     axis=(0.0, 0.0, -side), lower=0.0, upper=float(rng.uniform(1.5, 1.7)))
        links.append(_Link(name, boxes, joint))
    return links


def _scissors(rng) -> list[_Link]:
    """Two blades lying in the xy plane, tips towards +x, pivoting about z: 'blade_a' (the base, lower, cutting edge on
    its +y side, finger ring at +y behind the pivot) and 'blade_b' (0.5 mm above it, mirrored, ring at -y, a screw head
    on the pivot), revolute about +z through the pivot: 0 = closed (blades overlapping), 0.6-0.9 rad = open (blade_b's
    tip swings towards +y, its ring further to -y). The rings are as thick as both blades together, so the scissors
    lie on both rings and blade_a."""
    base, moving = ARTICULATED_PARTS['scissors']
    total = rng.uniform(0.14, 0.22)
    blade_l = total * rng.uniform(0.45, 0.58)
    handle_l = total - blade_l
    blade_w = total * rng.uniform(0.07, 0.1)
    t_a, t_b, gap = rng.uniform(0.0015, 0.0025), rng.uniform(0.0015, 0.0025), 0.0005
    height = t_a + gap + t_b
    edge, pad = 0.25 * blade_w, 0.6 * blade_w  # edge offset from the axis; blade length behind the pivot
    ring_gap, bar, shank_w = rng.uniform(0.001, 0.2 * blade_w), rng.uniform(0.003, 0.0045), rng.uniform(0.005, 0.008)
    ring_x = (handle_l - pad - 0.006) * rng.uniform(0.6, 0.85)
    ring_y = rng.uniform(0.018, 0.03)
    metal = np.append(np.clip(rng.uniform(0.55, 0.85) + rng.uniform(-0.04, 0.04, 3), 0, 1) * 255.0,
                      255.0).astype(np.uint8)
    plastic = _colour(rng)
    links = []
    for name, side, z0, t in ((base, 1.0, 0.0, t_a), (moving, -1.0, t_a + gap, t_b)):
        zc = z0 + t / 2
        boxes = []
        for x0, x1, share in ((-pad, 0.45 * blade_l, 1.0), (0.45 * blade_l, 0.8 * blade_l, 0.7),
                              (0.8 * blade_l, blade_l, 0.4)):  # tapering, the cutting edge straight
            w = share * blade_w
            boxes.append(_Box(((x0 + x1) / 2, side * (edge - w / 2), zc), (x1 - x0, w, t), metal))
        ring_front = -handle_l + ring_x
        shank_x0, shank_x1 = ring_front - bar, 0.3 * blade_w
        boxes.append(_Box(((shank_x0 + shank_x1) / 2, side * (ring_gap + shank_w / 2), zc),
                          (shank_x1 - shank_x0, shank_w, t), metal))
        ring_yc, ring_xc = side * (ring_gap + ring_y / 2), -handle_l + ring_x / 2
        boxes += [_Box((ring_xc, ring_yc - ring_y / 2 + bar / 2, height / 2), (ring_x, bar, height), plastic),
                  _Box((ring_xc, ring_yc + ring_y / 2 - bar / 2, height / 2), (ring_x, bar, height), plastic),
                  _Box((-handle_l + bar / 2, ring_yc, height / 2), (bar, ring_y - 2 * bar, height), plastic),
                  _Box((ring_front - bar / 2, ring_yc, height / 2), (bar, ring_y - 2 * bar, height), plastic)]
        if name == moving:
            boxes.append(_Box((0.0, 0.0, height + 0.0004), (0.006, 0.006, 0.0008),
                               np.append(metal[:3] // 2 + 40, 255).astype(np.uint8)))
        links.append(_Link(name, boxes))
    links[1].joint = dict(name=f'{moving}_joint', type='revolute', origin=(0.0, 0.0, t_a + gap), axis=(0.0, 0.0, 1.0),
                          lower=0.0, upper=float(rng.uniform(0.6, 0.9)))
    return links


_ARTICULATED_BUILDERS = {'cabinet': _cabinet, 'laptop': _laptop, 'drawer': _drawer, 'eyeglasses': _eyeglasses,
                         'scissors': _scissors}


def _box_mesh(box: _Box) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=box.extents)
    mesh.apply_translation(box.centre)
    return _painted(mesh, np.tile(box.rgba, (len(mesh.vertices), 1)))


def _fmt(values) -> str:
    return ' '.join(f'{float(v):.6f}' for v in values)


def articulated_instance(category: str, seed: int, folder: str | Path) -> ArticulatedAsset:
    """Write the instance `seed` of an articulated category into `folder`/<name>/ (URDF + OBJs; rewritten if there)."""
    if category not in _ARTICULATED_BUILDERS:
        raise ValueError(f'unknown articulated category {category!r}; categories: {ARTICULATED_CATEGORIES}')
    links = _ARTICULATED_BUILDERS[category](_instance_rng(category, seed))
    if category in ARTICULATED_PARTS and tuple(link.name for link in links) != ARTICULATED_PARTS[category]:
        raise RuntimeError(f'{category} built parts {[link.name for link in links]}, not {ARTICULATED_PARTS[category]}')
    # Builders give every box in the base frame with the joints closed; child boxes go into their joint's frame.
    for link in links[1:]:
        o = np.asarray(link.joint['origin'])
        link.boxes = [_Box(tuple(np.asarray(b.centre) - o), b.extents, b.rgba, b.collides) for b in link.boxes]
    corners = []
    for link in links:
        offset = np.zeros(3) if link.joint is None else np.asarray(link.joint['origin'])
        for b in link.boxes:
            corners += [offset + np.asarray(b.centre) - np.asarray(b.extents) / 2,
                        offset + np.asarray(b.centre) + np.asarray(b.extents) / 2]
    corners = np.array(corners)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    centre = (lo + hi) / 2
    links[0].boxes = [_Box(tuple(np.asarray(b.centre) - centre), b.extents, b.rgba, b.collides) for b in links[0].boxes]
    for link in links[1:]:
        link.joint['origin'] = tuple(np.asarray(link.joint['origin']) - centre)

    name = f'{category}_{int(seed):07d}'
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    xml = [f'<?xml version="1.0"?>\n<robot name={quoteattr(name)}>']
    for link in links:
        mesh = trimesh.util.concatenate([_box_mesh(b) for b in link.boxes])
        mesh_file = f'{name}_{link.name}.obj'  # relative, for a portable folder; unique, as pybullet looks in cwd first
        with atomic_open(out / mesh_file) as f:
            f.write(mesh.export(file_type='obj'))
        xml.append(f'  <link name={quoteattr(link.name)}>\n'
                   '    <inertial><mass value="1.0"/><inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" '
                   'izz="0.01"/></inertial>\n'
                   f'    <visual><geometry><mesh filename={quoteattr(mesh_file)}/>'
                   '</geometry></visual>')
        for b in link.boxes:
            if b.collides:
                xml.append(f'    <collision><origin xyz="{_fmt(b.centre)}" rpy="0 0 0"/>'
                           f'<geometry><box size="{_fmt(b.extents)}"/></geometry></collision>')
        xml.append('  </link>')
    for link in links[1:]:
        j = link.joint
        xml.append(f'  <joint name={quoteattr(j["name"])} type="{j["type"]}">\n'
                   f'    <parent link={quoteattr(links[0].name)}/><child link={quoteattr(link.name)}/>\n'
                   f'    <origin xyz="{_fmt(j["origin"])}" rpy="0 0 0"/><axis xyz="{_fmt(j["axis"])}"/>\n'
                   f'    <limit lower="{j["lower"]:.6f}" upper="{j["upper"]:.6f}" effort="100" velocity="1"/>\n'
                   '  </joint>')
    xml.append('</robot>\n')
    urdf = out / f'{name}.urdf'
    with atomic_open(urdf) as f:
        f.write('\n'.join(xml))
    return ArticulatedAsset(category, int(seed), urdf, hi - lo)
