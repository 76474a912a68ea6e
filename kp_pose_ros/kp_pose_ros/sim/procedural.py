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
ARTICULATED_CATEGORIES = ('cabinet', 'laptop')
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
    return [_Link('base', base), _Link('lid', lid, joint)]


_ARTICULATED_BUILDERS = {'cabinet': _cabinet, 'laptop': _laptop}


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
