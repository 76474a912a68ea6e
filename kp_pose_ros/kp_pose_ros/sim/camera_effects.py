"""A colour camera's image formation, applied to a rendered image: the effects that set real frames apart from clean
renders, in the order a camera produces them.

  scene light --exposure gain--> --white-balance error--> optics: defocus (disc PSF), motion (line PSF)
  --> sensor: shot noise (variance proportional to the signal) + read noise (constant), clipping at full scale
  --> ISP: gamma encoding, contrast, saturation --> 8-bit quantisation --> JPEG (compressed transport)

Noise is added in linear light before gamma, so it is larger in bright regions in linear terms but, after gamma, most
visible in the shadows, as in real frames; blur happens before noise, so noise stays sharp on a blurred image.

``CameraEffects`` holds one draw of parameters (each ``None`` = that effect off; all ``None`` = identity);
``CameraEffects.sample(rng, EffectRanges())`` draws one from documented ranges; ``apply(rgb, effects, rng)`` runs
the pipeline. Input: RGB uint8 (0-255) or float (0-1); output: the same dtype kind. Renders from OpenGL/TinyRenderer
are display-referred: pass ``input_gamma=2.2`` to linearise them first, so that noise and exposure act on linear
light and ``gamma`` re-encodes (a gamma drawn around 2.2 then gives a mild tone-curve change, as the colour
augmentation of training/keypoint_data.augment does).

The pipeline covers keypoint_data.augment's photometric steps: brightness -> exposure, per-channel gain ->
white_balance_k (or channel_gains), contrast / saturation / gamma -> the same names, Gaussian and motion blur ->
defocus_radius and motion_length/angle, Gaussian noise -> shot + read noise, JPEG -> jpeg_quality.

Speed, 640x480 RGB uint8, one OpenCV thread, on the 2-core development host (median of 60 runs): every effect on
(defocus 1.5 px, motion 6 px, JPEG 80, input_gamma=2.2) 14.5 ms with numpy 2.4 / OpenCV 5.0 and 15.5 ms with numpy
1.26 / OpenCV 4.11; a draw from the default EffectRanges 11.7 / 12.1 ms on average. Noise generation (~3 ms, hence
the table-based standard_normal, 4x faster than numpy's) and the two gamma powers (~2.5 ms each) dominate; a long
diagonal motion blur adds ~1 ms. test_camera_effects.test_speed_640x480 checks a loose 40 ms bound.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

# Representative wavelengths of the sRGB primaries (dominant wavelengths of R, G, B), nm.
_PRIMARY_WAVELENGTHS_NM = np.array([612.0, 549.0, 464.0])
REFERENCE_TEMPERATURE_K = 6500.0  # D65: what a camera's white balance is assumed to be set for
_LUMA = np.array([0.299, 0.587, 0.114])


_NORMAL_TABLE: np.ndarray | None = None


def standard_normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard normal float32 samples, 4x faster than Generator.standard_normal: a uniform 16-bit integer from
    ``rng`` indexes a table of the 65536 normal quantiles at (i + 0.5) / 65536 (rescaled to unit variance). Tails
    stop at 4.3 sigma, which sensor noise never needs."""
    global _NORMAL_TABLE
    if _NORMAL_TABLE is None:
        from statistics import NormalDist
        inv = NormalDist().inv_cdf
        table = np.array([inv((i + 0.5) / 65536.0) for i in range(65536)])
        _NORMAL_TABLE = (table / np.sqrt(np.mean(table ** 2))).astype(np.float32)
    index = rng.integers(0, 65536, int(np.prod(shape)), dtype=np.uint16)
    return np.take(_NORMAL_TABLE, index).reshape(shape)


def _trim(kernel: np.ndarray) -> np.ndarray:
    """Drop all-zero border rows/columns symmetrically (the kernel's centre stays the anchor): filter2D's cost grows
    with the kernel's area, and a near-horizontal or near-vertical line kernel is mostly zeros."""
    rows, cols = np.flatnonzero(kernel.any(axis=1)), np.flatnonzero(kernel.any(axis=0))
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    hy, hx = max(cy - rows[0], rows[-1] - cy), max(cx - cols[0], cols[-1] - cx)
    return np.ascontiguousarray(kernel[cy - hy:cy + hy + 1, cx - hx:cx + hx + 1])


def _planck(wavelength_nm: np.ndarray, kelvin: float) -> np.ndarray:
    hc_over_k = 1.4387769e-2  # m K (second radiation constant)
    lam = wavelength_nm * 1e-9
    return lam ** -5 / np.expm1(hc_over_k / (lam * kelvin))


def white_balance_gains(kelvin: float, reference_k: float = REFERENCE_TEMPERATURE_K) -> np.ndarray:
    """Per-channel (R, G, B) gains, green = 1, that a grey surface lit by a black body at ``kelvin`` shows on a camera
    white-balanced for ``reference_k``: the ratio of Planck radiances at the primaries' wavelengths. Below the
    reference the cast is warm (R > 1 > B), above it cool."""
    if not kelvin > 0 or not reference_k > 0:
        raise ValueError(f'colour temperatures must be positive, got {kelvin} and {reference_k}')
    gains = _planck(_PRIMARY_WAVELENGTHS_NM, kelvin) / _planck(_PRIMARY_WAVELENGTHS_NM, reference_k)
    return gains / gains[1]


def disc_kernel(radius: float) -> np.ndarray:
    """Defocus point-spread function: a uniform disc of ``radius`` px (pillbox), edge pixels weighted by coverage
    (approximated by 0.5 + radius - distance, clipped to [0, 1]), normalised to sum 1."""
    if radius < 0:
        raise ValueError(f'defocus radius must be >= 0, got {radius}')
    half = int(np.ceil(radius + 0.5))
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(xs, ys), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Motion-blur point-spread function: a straight path of ``length`` px at ``angle_deg`` (counter-clockwise from
    the image x axis, as seen on screen with y down), sampled densely and splatted bilinearly, normalised to sum 1."""
    if length < 0:
        raise ValueError(f'motion length must be >= 0, got {length}')
    half = int(np.ceil(length / 2.0)) + 1
    size = 2 * half + 1
    t = np.linspace(-length / 2.0, length / 2.0, max(2, int(np.ceil(length * 8)) + 1))
    angle = np.deg2rad(angle_deg)
    x, y = half + t * np.cos(angle), half - t * np.sin(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    kernel = np.zeros((size, size), np.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), w)
    return _trim((kernel / kernel.sum()).astype(np.float32))


@dataclass(frozen=True)
class CameraEffects:
    """One camera's settings for one frame. Any field None: that stage is skipped (the identity).

    exposure         gain on linear light (1 = as rendered; 2 = one stop over-exposed)
    white_balance_k  colour temperature of the light the white balance did not correct for, K (6500 = neutral)
    channel_gains    explicit (R, G, B) gains, applied after white_balance_k (for custom casts)
    defocus_radius   disc PSF radius, px
    motion_length    line PSF length, px, along motion_angle_deg (counter-clockwise from +x on screen)
    shot_noise       photon noise: variance per unit signal (signal in full-scale units), = 1 / electrons at full
                     scale
    read_noise       read + dark noise standard deviation, in full-scale units (1/255 = one 8-bit level)
    gamma            encoding gamma: out = in ** (1 / gamma)
    contrast         ISP contrast about mid-grey (0.5) after gamma
    saturation       ISP saturation about the luma (0 = grey)
    jpeg_quality     JPEG quality 1-100 of the transport
    """
    exposure: float | None = None
    white_balance_k: float | None = None
    channel_gains: tuple[float, float, float] | None = None
    defocus_radius: float | None = None
    motion_length: float | None = None
    motion_angle_deg: float = 0.0
    shot_noise: float | None = None
    read_noise: float | None = None
    gamma: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    jpeg_quality: int | None = None

    @classmethod
    def sample(cls, rng: np.random.Generator, ranges: EffectRanges | None = None) -> CameraEffects:
        """One random camera from ``ranges`` (default EffectRanges()): each effect on with its probability, its
        value uniform in its range (shot noise log-uniform). The same rng state always gives the same effects."""
        r = EffectRanges() if ranges is None else ranges
        # Every value is drawn whether or not its effect is on, so one effect's probability never shifts the others.
        on = rng.random(8) < np.array([r.p_exposure, r.p_white_balance, r.p_defocus, r.p_motion, r.p_noise,
                                       r.p_gamma, r.p_tone, r.p_jpeg])
        exposure = rng.uniform(*r.exposure)
        kelvin = rng.uniform(*r.white_balance_k)
        radius = rng.uniform(*r.defocus_radius)
        length, angle = rng.uniform(*r.motion_length), rng.uniform(0.0, 180.0)
        shot = float(np.exp(rng.uniform(*np.log(r.shot_noise))))
        read = rng.uniform(*r.read_noise)
        gamma = rng.uniform(*r.gamma)
        contrast, saturation = rng.uniform(*r.contrast), rng.uniform(*r.saturation)
        quality = int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
        return cls(
            exposure=float(exposure) if on[0] else None,
            white_balance_k=float(kelvin) if on[1] else None,
            defocus_radius=float(radius) if on[2] else None,
            motion_length=float(length) if on[3] else None, motion_angle_deg=float(angle),
            shot_noise=shot if on[4] else None, read_noise=float(read) if on[4] else None,
            gamma=float(gamma) if on[5] else None,
            contrast=float(contrast) if on[6] else None, saturation=float(saturation) if on[6] else None,
            jpeg_quality=quality if on[7] else None)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class EffectRanges:
    """Ranges and probabilities for CameraEffects.sample; defaults model the cameras this suite targets (Intel
    RealSense D4xx RGB sensor, USB webcams) indoors:

    exposure 0.5-1.8 (about -1 to +0.85 stop): auto-exposure settling and back-lit scenes; the rendered image is
        taken as correctly exposed.
    white_balance_k 2800-7500 K: RealSense and UVC webcams expose white balance 2800-6500 K; indoor light ranges from
        warm LED/halogen (2700-3000 K) to overcast daylight through windows (~7000 K); auto white balance
        corrects only part of it, and the residual cast is what is modelled.
    defocus_radius 0.5-2.5 px: the D435's RGB module is fixed-focus; at 640x480 objects nearer than ~0.3 m or
        behind the focus distance blur by one or two pixels.
    motion_length 2-12 px: an arm moving at 0.5 m/s at 1 m, a 20 ms indoor exposure and a 615 px focal length
        move ~6 px during the exposure; handheld or fast motion doubles that.
    shot_noise 2e-4 to 5e-3 (log-uniform; 200-5000 electrons at full scale after analogue gain): std at mid-grey
        2.5-13 8-bit levels, from good light to dim rooms with high gain (the existing augmentation's 2-10 levels).
    read_noise 0.001-0.008 of full scale (0.25-2 8-bit levels): read + dark noise of small-pixel CMOS sensors.
    gamma 1.8-2.6 around sRGB's 2.2; contrast 0.8-1.2 and saturation 0.6-1.4: the ISP settings RealSense and UVC
        cameras expose (contrast, saturation, gamma) away from their defaults.
    jpeg_quality 40-95: MJPEG USB streams and ROS compressed image transport (default quality 80), lower on loaded
        links.
    """
    exposure: tuple[float, float] = (0.5, 1.8)
    white_balance_k: tuple[float, float] = (2800.0, 7500.0)
    defocus_radius: tuple[float, float] = (0.5, 2.5)
    motion_length: tuple[float, float] = (2.0, 12.0)
    shot_noise: tuple[float, float] = (2e-4, 5e-3)
    read_noise: tuple[float, float] = (0.001, 0.008)
    gamma: tuple[float, float] = (1.8, 2.6)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.6, 1.4)
    jpeg_quality: tuple[int, int] = (40, 95)
    p_exposure: float = 0.9
    p_white_balance: float = 0.8
    p_defocus: float = 0.25
    p_motion: float = 0.15
    p_noise: float = 0.9
    p_gamma: float = 1.0
    p_tone: float = 0.5
    p_jpeg: float = 0.5


def _colour_matrix(effects: CameraEffects) -> np.ndarray | None:
    gains = np.ones(3)
    if effects.exposure is not None:
        gains *= effects.exposure
    if effects.white_balance_k is not None:
        gains *= white_balance_gains(effects.white_balance_k)
    if effects.channel_gains is not None:
        gains *= np.asarray(effects.channel_gains, float)
    if effects.exposure is None and effects.white_balance_k is None and effects.channel_gains is None:
        return None
    return np.diag(gains)


def apply(rgb: np.ndarray, effects: CameraEffects, rng: np.random.Generator,
          input_gamma: float | None = None) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 or float in [0, 1] through the camera ``effects``; returns the same dtype kind (uint8,
    or float32 in [0, 1] for float input). ``input_gamma`` linearises a display-referred input first (x ** gamma).
    Noise is drawn from ``rng``. All effects None and no input_gamma: the input, unchanged (a copy)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f'rng must be a numpy.random.Generator, got {type(rng).__name__}')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) RGB image, got shape {rgb.shape}')
    is_uint8 = rgb.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(rgb.dtype, np.floating):
        raise TypeError(f'expected uint8 or float RGB, got {rgb.dtype}')
    changed = input_gamma is not None
    if is_uint8:  # one 256-entry table does the scaling to [0, 1] and the linearisation
        levels = np.arange(256, dtype=np.float64) / 255.0
        x = np.take((levels if input_gamma is None else levels ** float(input_gamma)).astype(np.float32), rgb)
    else:
        x = rgb.astype(np.float32, copy=True)
        if input_gamma is not None:
            x = cv2.pow(np.maximum(x, 0.0), float(input_gamma))

    # 1. light: exposure and white balance as one diagonal colour matrix
    matrix = _colour_matrix(effects)
    if matrix is not None:
        x = cv2.transform(x, matrix.astype(np.float32))
        changed = True
    # 2. optics
    if effects.defocus_radius is not None and effects.defocus_radius > 0:
        x = cv2.filter2D(x, -1, disc_kernel(effects.defocus_radius), borderType=cv2.BORDER_REFLECT)
        changed = True
    if effects.motion_length is not None and effects.motion_length > 0:
        x = cv2.filter2D(x, -1, line_kernel(effects.motion_length, effects.motion_angle_deg),
                         borderType=cv2.BORDER_REFLECT)
        changed = True
    # 3. sensor: Gaussian approximation of Poisson shot noise (variance = shot_noise * signal) plus read noise
    if effects.shot_noise is not None or effects.read_noise is not None:
        shot = float(effects.shot_noise or 0.0)
        read = float(effects.read_noise or 0.0)
        noise = standard_normal(rng, x.shape)
        if shot > 0:  # in place: one temporary, the per-pixel standard deviation
            sigma = np.maximum(x, 0.0)
            sigma *= np.float32(shot)
            sigma += np.float32(read * read)
            cv2.sqrt(sigma, sigma)
            noise *= sigma
        else:
            noise *= np.float32(read)
        x += noise
        changed = True
    if changed:
        x = np.clip(x, 0.0, 1.0, out=x)  # full-well / ADC saturation
    # 4. ISP tone: gamma encoding, contrast about mid-grey, saturation about the luma
    if effects.gamma is not None:
        x = cv2.pow(np.maximum(x, 0.0), 1.0 / float(effects.gamma))
    if effects.contrast is not None or effects.saturation is not None:
        c = 1.0 if effects.contrast is None else float(effects.contrast)
        s = 1.0 if effects.saturation is None else float(effects.saturation)
        tone = c * (s * np.eye(3) + (1.0 - s) * np.outer(np.ones(3), _LUMA))
        offset = 0.5 * (1.0 - c)
        x = cv2.transform(x, np.hstack([tone, np.full((3, 1), offset)]).astype(np.float32))
        x = np.clip(x, 0.0, 1.0, out=x)
    # 5. quantisation and transport
    if effects.jpeg_quality is not None:
        q = int(effects.jpeg_quality)
        if not 1 <= q <= 100:
            raise ValueError(f'jpeg_quality must be in 1-100, got {q}')
        eight_bit = _to_uint8(x)
        ok, buffer = cv2.imencode('.jpg', cv2.cvtColor(eight_bit, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise RuntimeError('JPEG encoding failed')
        out = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return out if is_uint8 else out.astype(np.float32) * np.float32(1.0 / 255.0)
    if is_uint8:
        return _to_uint8(x)
    return x


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(x, alpha=255.0)  # rounds and saturates; x is already >= 0
