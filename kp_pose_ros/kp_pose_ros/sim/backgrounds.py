"""Procedural images for domain randomisation: floor textures and backdrops behind the robot.

A keypoint network trained on one grey floor learns the floor. Random gradients, smooth noise, clutter of shapes and
checkerboards (which also mimic tiled floors and calibration boards) make the robot the only constant in the data.
Everything is drawn from the caller's numpy Generator, so a scene seeded once is reproducible. Images are RGB uint8.
"""
from __future__ import annotations

import cv2
import numpy as np


def _check(rng: np.random.Generator, height: int, width: int) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f'rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}')
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(f'image size must be positive integers, got height={height} width={width}')


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Linear blend between two random colours along a random direction."""
    _check(rng, height, width)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = np.cos(angle) * xs + np.sin(angle) * ys
    span = float(along.max() - along.min())
    s = ((along - along.min()) / span if span > 0 else np.zeros_like(along))[..., None]
    image = (1.0 - s) * _colour(rng) + s * _colour(rng)
    return np.clip(image, 0, 255).astype(np.uint8)


def value_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 4) -> np.ndarray:
    """Smooth multi-scale colour noise (random grids upsampled bicubically and summed, coarse scales weighted most),
    a stand-in for textured surfaces such as wood, carpet or concrete."""
    _check(rng, height, width)
    if octaves < 1:
        raise ValueError(f'octaves must be >= 1, got {octaves}')
    total = np.zeros((height, width, 3), np.float32)
    weight_sum = 0.0
    cells = int(rng.integers(2, 6))
    for octave in range(octaves):
        grid = rng.uniform(-1.0, 1.0, size=(cells, cells, 3)).astype(np.float32)
        weight = 0.5 ** octave
        total += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight_sum += weight
        cells *= 2
    image = _colour(rng) + rng.uniform(30.0, 110.0) * (total / weight_sum)
    return np.clip(image, 0, 255).astype(np.uint8)


def random_shapes(rng: np.random.Generator, height: int, width: int, count: int | None = None) -> np.ndarray:
    """Filled rectangles, circles, triangles and thick lines of random colours over a flat random colour: clutter with
    edges and corners that a detector must learn to ignore."""
    _check(rng, height, width)
    if count is None:
        count = int(rng.integers(5, 30))
    image = np.empty((height, width, 3), np.uint8)
    image[:] = _colour(rng).astype(np.uint8)
    size = max(height, width)
    for _ in range(count):
        colour = tuple(float(c) for c in _colour(rng))
        kind = int(rng.integers(0, 4))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.uniform(0.03, 0.3) * size) + 1
        if kind == 0:
            x2, y2 = x + int(rng.integers(-extent, extent + 1)), y + int(rng.integers(-extent, extent + 1))
            cv2.rectangle(image, (x, y), (x2, y2), colour, thickness=-1)
        elif kind == 1:
            cv2.circle(image, (x, y), extent, colour, thickness=-1, lineType=cv2.LINE_AA)
        elif kind == 2:
            points = np.array([(x, y)] * 3) + rng.integers(-extent, extent + 1, size=(3, 2))
            cv2.fillPoly(image, [points.astype(np.int32)], colour, lineType=cv2.LINE_AA)
        else:
            x2, y2 = (x + int(rng.integers(-2 * extent, 2 * extent + 1)),
                      y + int(rng.integers(-2 * extent, 2 * extent + 1)))
            cv2.line(image, (x, y), (x2, y2), colour, thickness=int(rng.integers(1, max(2, size // 40))),
                     lineType=cv2.LINE_AA)
    return image


def checkerboard(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Two-colour checkerboard with random square size and phase, like floor tiles or a calibration target."""
    _check(rng, height, width)
    square = int(rng.integers(max(2, min(height, width) // 32), max(3, min(height, width) // 4) + 1))
    oy, ox = int(rng.integers(0, square)), int(rng.integers(0, square))
    ys, xs = np.mgrid[0:height, 0:width]
    mask = (((ys + oy) // square + (xs + ox) // square) % 2).astype(bool)
    image = np.empty((height, width, 3), np.uint8)
    image[~mask] = _colour(rng).astype(np.uint8)
    image[mask] = _colour(rng).astype(np.uint8)
    return image


_GENERATORS = (gradient, value_noise, random_shapes, checkerboard)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One of the generators above, chosen at random, sometimes with a second one blended in for mixed texture."""
    _check(rng, height, width)
    image = _GENERATORS[int(rng.integers(len(_GENERATORS)))](rng, height, width)
    if rng.random() < 0.3:
        other = _GENERATORS[int(rng.integers(len(_GENERATORS)))](rng, height, width)
        image = cv2.addWeighted(image, 0.7, other, 0.3, 0.0)
    return image
