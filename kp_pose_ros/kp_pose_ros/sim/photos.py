"""Real photographs for domain randomisation: backgrounds and surface textures, found in installed packages.

A keypoint network trained only on procedural backdrops (see backgrounds.py) has never seen a kitchen cabinet or a
wooden floor and fires on them. DREAM and BlenderProc composite their renders over real photographs instead; this
module supplies such photographs without any download at run time: it looks for a fixed catalogue of images inside
packages that install from PyPI or Debian, every one with a licence that allows use and the licence recorded here.

Sources (``CATALOGUE``; counts are the images catalogued, all of them real photographs):

====================================  =======  =====  ==============================================================
install                               where    count  licence
====================================  =======  =====  ==============================================================
pip install scikit-learn              sklearn  2      CC BY 2.0 (Flickr photographers, attribution below)
pip install scikit-image              skimage  9      CC0 / public domain (per image, from skimage.data docstrings)
pip install matplotlib                mpl      1      public domain (U.S. Navy photograph)
pip install --no-deps robosuite       textures 25     MIT (the package's licence; wood, plaster, tiles, felt, steel)
pip install --no-deps metaworld       textures 25     MIT (the package's licence; wood, marble, granite, floor, brick)
apt-get install mate-backgrounds      /usr     12     GPL-2+ (Debian copyright file, per-photo authors)
apt-get install plasma-workspace-wal  /usr     11     LGPL-3.0 (each wallpaper's metadata; Debian copyright: GPL-2+)
apt-get install lomiri-wallpapers-20  /usr     1      CC BY-SA 3.0
====================================  =======  =====  ==============================================================

robosuite and metaworld are installed with ``--no-deps``: only their texture PNGs are read (nothing is imported;
the package directory is found with importlib.util.find_spec, which does not execute the package). Product labels
(robosuite's can/cereal/soda) and flat-colour or drawn textures are left out on purpose.

Use: ``available_photos()`` lists what is installed (each entry with its source and licence), ``have_photos()`` is
the flag a caller tests before choosing photographs over the procedural generators, ``random_photo_crop(rng, h, w)``
returns an RGB uint8 crop (random photo, scale, position, flip, colour jitter) and ``licence_records()`` the list a
dataset manifest should carry. Every random choice comes from the caller's numpy Generator, so a seed reproduces a
crop exactly on the same set of installed photos. Decoded photos are kept in a least-recently-used cache bounded in
bytes (``set_cache_limit``); photos are decoded at most ``MAX_SIDE`` pixels on their long side.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

CC0 = ('CC0-1.0', 'https://creativecommons.org/publicdomain/zero/1.0/legalcode')
PUBLIC_DOMAIN = ('public domain', 'https://creativecommons.org/publicdomain/mark/1.0/')
CC_BY_2 = ('CC-BY-2.0', 'https://creativecommons.org/licenses/by/2.0/legalcode')
CC_BY_SA_3 = ('CC-BY-SA-3.0', 'https://creativecommons.org/licenses/by-sa/3.0/legalcode')
MIT = ('MIT', 'https://opensource.org/license/mit')
GPL_2_PLUS = ('GPL-2.0-or-later', 'https://www.gnu.org/licenses/old-licenses/gpl-2.0.html')
LGPL_3 = ('LGPL-3.0', 'https://www.gnu.org/licenses/lgpl-3.0.html')
# Licences that ask derived works to keep the same licence: a caller that must avoid them passes copyleft=False.
COPYLEFT = frozenset({CC_BY_SA_3[0], GPL_2_PLUS[0], LGPL_3[0]})

SCENE, TEXTURE = 'scene', 'texture'
MAX_SIDE = 1600  # px: longer photos are downscaled once at decode (crops are for 640x480-class cameras)


class NoPhotosError(LookupError):
    """No catalogued photograph is installed: use the procedural backgrounds (backgrounds.random_background)."""


@dataclass(frozen=True)
class PhotoSpec:
    """One catalogued image: its path inside the source (alternatives: the first that exists is used), who made it,
    where it came from, whether it is a whole scene or a surface texture, and a licence when it differs from the
    source's."""
    path: str | tuple[str, ...]
    attribution: str = ''
    origin: str = ''
    category: str = SCENE
    licence: tuple[str, str] | None = None


@dataclass(frozen=True)
class PhotoSource:
    """A package that ships photographs: ``package`` is a Python import name (PyPI) located with find_spec, ``root``
    a system folder (Debian package); ``install`` is the command that brings it."""
    name: str
    install: str
    licence: tuple[str, str]
    attribution: str
    files: tuple[PhotoSpec, ...]
    package: str | None = None
    root: str | None = None
    licence_source: str = ''


@dataclass(frozen=True)
class Photo:
    """An installed catalogued photograph."""
    key: str            # '<source>:<path in source>', stable across machines
    path: str           # absolute path on this machine
    source: str
    install: str
    licence: str
    licence_url: str
    attribution: str
    origin: str
    category: str

    @property
    def copyleft(self) -> bool:
        return self.licence in COPYLEFT


def _skimage(name: str, attribution: str, origin: str, licence=CC0, category=SCENE) -> PhotoSpec:
    return PhotoSpec(f'data/{name}', attribution, origin, category, licence)


def _textures(folder: str, names: str) -> tuple[PhotoSpec, ...]:
    return tuple(PhotoSpec(f'{folder}/{n}.png', category=TEXTURE) for n in names.split())


def _plasma(name: str, author: str) -> PhotoSpec:
    images = f'{name}/contents/images'
    return PhotoSpec((f'{images}/1920x1200.jpg', f'{images}/2560x1600.jpg'), author,
                     'https://invent.kde.org/plasma/plasma-workspace-wallpapers')


_BARBIN = 'Charles Barbin'
_SAUKONPAA = 'Risto Saukonpää'

CATALOGUE: tuple[PhotoSource, ...] = (
    PhotoSource(
        'scikit-learn', 'pip install scikit-learn', CC_BY_2, '', package='sklearn',
        licence_source='sklearn/datasets/images/README.txt',
        files=(PhotoSpec('datasets/images/china.jpg', 'danielbuechele (Flickr), scaled down by Robert Layton',
                         'https://www.flickr.com/photos/danielbuechele/6061409035/'),
               PhotoSpec('datasets/images/flower.jpg', 'vultilion (Flickr), scaled down by Robert Layton',
                         'https://www.flickr.com/photos/vultilion/6056698931/'))),
    PhotoSource(
        'scikit-image', 'pip install scikit-image', CC0, '', package='skimage',
        licence_source='docstrings of skimage.data (skimage/data/_fetchers.py)',
        files=(_skimage('astronaut.png', 'NASA (Eileen Collins)', 'https://flic.kr/p/r9qvLn', PUBLIC_DOMAIN),
               _skimage('camera.png', 'Lav Varshney', 'https://github.com/scikit-image/scikit-image/issues/3927'),
               _skimage('chelsea.png', 'Stefan van der Walt', 'skimage.data.chelsea'),
               _skimage('coffee.png', 'Rachel Michetti (courtesy of Pikolo Espresso Bar)', 'skimage.data.coffee'),
               _skimage('clock_motion.png', 'Stefan van der Walt', 'skimage.data.clock', PUBLIC_DOMAIN),
               _skimage('rocket.jpg', 'SpaceX (DSCOVR launch)',
                        'https://www.flickr.com/photos/spacexphotos/16511594820/', PUBLIC_DOMAIN),
               _skimage('brick.png', 'CC0Textures (Bricks25)', 'https://cc0textures.com/view.php?tex=Bricks25',
                        category=TEXTURE),
               _skimage('grass.png', 'linolafett (DeviantArt)',
                        'https://www.deviantart.com/linolafett/art/Grass-01-434853879', category=TEXTURE),
               _skimage('gravel.png', 'CC0Textures (Gravel04)', 'https://cc0textures.com/view.php?tex=Gravel04',
                        category=TEXTURE))),
    PhotoSource(
        'matplotlib', 'pip install matplotlib', PUBLIC_DOMAIN, 'U.S. Navy photograph (Grace Hopper)',
        package='matplotlib', licence_source='work of the U.S. federal government (Wikimedia Commons record)',
        files=(PhotoSpec('mpl-data/sample_data/grace_hopper.jpg',
                         origin='https://commons.wikimedia.org/wiki/File:Commodore_Grace_M._Hopper,_USN_(covered).jpg'),)),
    PhotoSource(
        'robosuite', 'pip install --no-deps robosuite', MIT, 'robosuite authors (Stanford SVL, UT RPL)',
        package='robosuite', licence_source='robosuite dist-info licenses/LICENSE (covers the package files)',
        files=_textures('models/assets/textures',
                        'blue-wood brass-ambra bread clay cream-plaster dark-wood dirt gray-felt gray-plaster '
                        'gray-woodgrain green-wood lemon light-gray-floor-tile light-gray-plaster light-wood metal '
                        'pink-plaster red-wood steel-brushed steel-scratched white-bricks white-plaster wood-tiles '
                        'wood-varnished-panels yellow-plaster')),
    PhotoSource(
        'metaworld', 'pip install --no-deps metaworld', MIT, 'Meta-World authors (Farama Foundation)',
        package='metaworld', licence_source='metaworld dist-info licenses/LICENSE (covers the package files)',
        files=_textures('assets/textures',
                        'brick1 darkwood floor1 floor2 granite light_wood light_wood_v2 light_wood_v3 marble metal1 '
                        'metal2 plaster1 real_door wood wood1 wood2 wood3 wood4 wood_light')
        + _textures('assets/scene/textures', 'fabricPattern fabricPlain white_marble_tile white_marble_tile2 '
                    'wood wood2')),
    PhotoSource(
        'mate-backgrounds', 'apt-get install mate-backgrounds', GPL_2_PLUS, '', root='/usr/share/backgrounds/mate',
        licence_source='/usr/share/doc/mate-backgrounds/copyright',
        files=tuple(PhotoSpec(f'nature/{n}.jpg', a, 'https://git.mate-desktop.org/mate-backgrounds/') for n, a in (
            ('Aqua', _BARBIN), ('Blinds', 'Lennart Poettering, Andrea Cimitan'),
            ('Dune', 'Marco Cogoni, Hylke Bons'), ('FreshFlower', 'Jens Ansorg'), ('Garden', _BARBIN),
            ('GreenMeadow', 'Timothy Schellhase, Lapo Calamandrei'), ('LadyBird', _BARBIN),
            ('RainDrops', 'blackcombwhistler07'), ('Storm', 'Sergey Nazarov'), ('TwoWings', f'{_BARBIN}, Hylke Bons'),
            ('Wood', 'Jean-François Fortin Tam'), ('YellowFlower', _BARBIN)))),
    PhotoSource(
        'plasma-workspace-wallpapers', 'apt-get install plasma-workspace-wallpapers', LGPL_3, '',
        root='/usr/share/wallpapers',
        licence_source='each wallpaper\'s metadata.json (KPlugin.License); /usr/share/doc/plasma-workspace-wallpapers/'
                       'copyright says GPL-2+ for the whole package',
        files=tuple(_plasma(n, a) for n, a in (
            ('BytheWater', 'Maciej Wiklo'), ('ColdRipple', _SAUKONPAA), ('ColorfulCups', 'Dmitri Popov'),
            ('DarkestHour', _SAUKONPAA), ('EveningGlow', 'Ian Hex'), ('FallenLeaf', 'Martin Klapetek'),
            ('Grey', 'Sigi Sagi'), ('Kite', _SAUKONPAA), ('OneStandsOut', _SAUKONPAA), ('Path', _SAUKONPAA),
            ('summer_1am', _SAUKONPAA)))),
    PhotoSource(
        'lomiri-wallpapers-20.04', 'apt-get install lomiri-wallpapers-20.04', CC_BY_SA_3, 'Lukas Baubkus',
        root='/usr/share/backgrounds', licence_source='/usr/share/doc/lomiri-wallpapers-20.04/copyright',
        files=(PhotoSpec('Kleiber_by_Lukas_Baubkus.jpg', origin='https://gitlab.com/ubports/development/core/'
                                                                  'lomiri-wallpapers'),)),
)


def _source_root(source: PhotoSource) -> Path | None:
    if source.root is not None:
        return Path(source.root) if os.path.isdir(source.root) else None
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _resolve(root: Path, path: str | tuple[str, ...]) -> Path | None:
    for candidate in (path,) if isinstance(path, str) else path:
        if any(c in candidate for c in '*?['):
            matches = sorted(glob.glob(str(root / candidate)))
            if matches:
                return Path(matches[0])
        elif (root / candidate).is_file():
            return root / candidate
    return None


def available_photos(category: str | None = None, copyleft: bool = True,
                     sources: tuple[str, ...] | None = None) -> list[Photo]:
    """The catalogued photographs installed on this machine, in catalogue order (so the same installs give the same
    list and a seed the same crops). ``category`` keeps only 'scene' or 'texture'; ``copyleft=False`` drops the
    share-alike licences (GPL, LGPL, CC BY-SA); ``sources`` keeps only the named sources."""
    if category not in (None, SCENE, TEXTURE):
        raise ValueError(f"category must be None, '{SCENE}' or '{TEXTURE}', got {category!r}")
    photos = []
    for source in CATALOGUE:
        if sources is not None and source.name not in sources:
            continue
        root = _source_root(source)
        if root is None:
            continue
        for spec in source.files:
            if category is not None and spec.category != category:
                continue
            path = _resolve(root, spec.path)
            if path is None:
                continue
            licence, url = spec.licence or source.licence
            if not copyleft and licence in COPYLEFT:
                continue
            photos.append(Photo(
                key=f'{source.name}:{path.relative_to(root).as_posix()}', path=str(path), source=source.name,
                install=source.install, licence=licence, licence_url=url,
                attribution=spec.attribution or source.attribution, origin=spec.origin, category=spec.category))
    return photos


def have_photos(**filters) -> bool:
    """True when at least one catalogued photograph is installed (filters as in available_photos)."""
    return bool(available_photos(**filters))


def missing_sources() -> list[str]:
    """Install commands of the catalogued sources that are not installed here (for a log line or a skip reason)."""
    return [s.install for s in CATALOGUE if _source_root(s) is None]


def licence_records(photos: list[Photo] | None = None) -> list[dict]:
    """One dict per photograph (key, source, install, licence, licence_url, attribution, origin, category) for a
    dataset manifest; by default every installed photograph."""
    records = []
    for photo in available_photos() if photos is None else photos:
        record = asdict(photo)
        record.pop('path')
        records.append(record)
    return records


# Decoded images, most recently used last, bounded in bytes; shared by threads (a lock guards it).
_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_cache_bytes = 0
_cache_limit = 256 * 1024 * 1024
_lock = threading.Lock()


def set_cache_limit(max_bytes: int) -> None:
    """Bound the decoded-photo cache (default 256 MiB; 0 disables it) and evict down to the new bound."""
    global _cache_limit
    if max_bytes < 0:
        raise ValueError(f'max_bytes must be >= 0, got {max_bytes}')
    with _lock:
        _cache_limit = int(max_bytes)
        _evict()


def cache_info() -> dict:
    with _lock:
        return {'images': len(_cache), 'bytes': _cache_bytes, 'limit_bytes': _cache_limit}


def _evict() -> None:
    global _cache_bytes
    while _cache and _cache_bytes > _cache_limit:
        _, image = _cache.popitem(last=False)
        _cache_bytes -= image.nbytes


def load_photo(photo: Photo | str) -> np.ndarray:
    """The photograph as RGB uint8 (greyscale ones as three equal channels), at most MAX_SIDE px on its long side;
    read-only and cached, so callers copy before writing."""
    global _cache_bytes
    path = photo.path if isinstance(photo, Photo) else str(photo)
    with _lock:
        image = _cache.get(path)
        if image is not None:
            _cache.move_to_end(path)
            return image
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f'cannot decode photograph {path}')
    scale = MAX_SIDE / max(bgr.shape[:2])
    if scale < 1.0:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    image.setflags(write=False)
    with _lock:
        if path not in _cache and image.nbytes <= _cache_limit:
            _cache[path] = image
            _cache_bytes += image.nbytes
            _evict()
    return image


@dataclass(frozen=True)
class CropRanges:
    """Random crop and colour jitter: ``scale`` is the crop window's size as a fraction of the largest window of the
    output's aspect ratio that fits in the photo (1 = the whole photo's width or height); the jitters are a global
    brightness gain, per-channel gains (a colour cast) and a saturation factor."""
    scale: tuple[float, float] = (0.25, 1.0)
    flip_probability: float = 0.5
    brightness: tuple[float, float] = (0.7, 1.3)
    channel_gain: tuple[float, float] = (0.9, 1.1)
    saturation: tuple[float, float] = (0.6, 1.3)


def random_photo_crop(rng: np.random.Generator, height: int, width: int, photos: list[Photo] | None = None,
                      ranges: CropRanges = CropRanges(), fallback=None) -> np.ndarray:
    """A (height, width, 3) RGB uint8 crop of a random installed photograph: random photo, window scale and position,
    horizontal flip, brightness / colour-cast / saturation jitter, all drawn from ``rng``.

    ``photos`` defaults to available_photos(). With none installed, ``fallback(rng, height, width)`` is returned when
    given (e.g. backgrounds.random_background), otherwise NoPhotosError is raised.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f'rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}')
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(f'crop size must be positive integers, got height={height} width={width}')
    height, width = int(height), int(width)
    if photos is None:
        photos = available_photos()
    if not photos:
        if fallback is not None:
            return fallback(rng, height, width)
        raise NoPhotosError('no catalogued photograph is installed; install one of: ' + '; '.join(missing_sources()))
    image = load_photo(photos[int(rng.integers(len(photos)))])
    ih, iw = image.shape[:2]
    fit = min(iw / width, ih / height)  # the largest window of the output's aspect ratio is (fit*width, fit*height)
    s = fit * rng.uniform(*ranges.scale)
    cw, ch = min(iw, max(1.0, s * width)), min(ih, max(1.0, s * height))
    x0, y0 = rng.uniform(0.0, iw - cw), rng.uniform(0.0, ih - ch)
    flip = rng.random() < ranges.flip_probability
    # One affine warp does crop, scale and flip with sub-pixel placement (pixel centres mapped onto pixel centres).
    # When shrinking by more than 1.5x, the window is first area-averaged (cv2.INTER_AREA) to about the output size,
    # so the warp never aliases and its cost stays that of the output, whatever the photo's size.
    sx, sy = width / cw, height / ch
    M = np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]])
    src = image
    if min(sx, sy) < 1.0 / 1.5:
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        xb, yb = min(iw, int(np.ceil(x0 + cw))), min(ih, int(np.ceil(y0 + ch)))
        rw, rh = max(1, round((xb - xa) * sx)), max(1, round((yb - ya) * sy))
        src = cv2.resize(image[ya:yb, xa:xb], (rw, rh), interpolation=cv2.INTER_AREA)
        ax, ay = rw / (xb - xa), rh / (yb - ya)
        # a source x maps to r = ax * (x - xa + 0.5) - 0.5 in the reduced window; re-express u = sx * x + t in r
        M = np.array([[sx / ax, 0.0, M[0, 2] + sx * (0.5 / ax + xa - 0.5)],
                      [0.0, sy / ay, M[1, 2] + sy * (0.5 / ay + ya - 0.5)]])
    if flip:
        M[0] = -M[0]
        M[0, 2] += width - 1.0
    out = cv2.warpAffine(src, M, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gains = rng.uniform(*ranges.brightness) * rng.uniform(*ranges.channel_gain, size=3)
    saturation = rng.uniform(*ranges.saturation)
    # gains then saturation about the luma, as one 3x3 colour matrix (cv2.transform rounds and saturates to uint8)
    luma = np.array([0.299, 0.587, 0.114])
    colour = (saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), luma)) @ np.diag(gains)
    return cv2.transform(out, colour)
