"""Real photographs for domain randomisation (kp_pose_ros.sim.photos): catalogue licences, installed sources,
deterministic crops of the requested size, fallback when none is installed."""
import importlib.util

import numpy as np
import pytest

from kp_pose_ros.sim import backgrounds, photos

PHOTOS = photos.available_photos()
NEEDS_PHOTOS = pytest.mark.skipif(
    not PHOTOS, reason='no catalogued photograph installed (pip install scikit-image scikit-learn matplotlib)')
ALLOWED = {'CC0-1.0', 'public domain', 'CC-BY-2.0', 'CC-BY-SA-3.0', 'MIT', 'GPL-2.0-or-later', 'LGPL-3.0'}


def test_every_catalogue_entry_has_a_usable_licence():
    for source in photos.CATALOGUE:
        assert source.install and source.licence_source, source.name
        assert (source.package is None) != (source.root is None), source.name
        for spec in source.files:
            name, url = spec.licence or source.licence
            assert name in ALLOWED, (source.name, spec.path, name)
            assert url.startswith('https://'), (source.name, spec.path)
            assert spec.attribution or source.attribution, (source.name, spec.path)
            assert spec.category in (photos.SCENE, photos.TEXTURE)


@NEEDS_PHOTOS
def test_installed_photos_carry_source_and_licence():
    keys = [p.key for p in PHOTOS]
    assert len(keys) == len(set(keys))
    for p in PHOTOS:
        assert p.licence in ALLOWED and p.licence_url and p.attribution and p.install
        assert p.key.startswith(p.source + ':')
    records = photos.licence_records()
    assert len(records) == len(PHOTOS)
    assert all('path' not in r and r['licence'] and r['attribution'] for r in records)
    assert not any(p.copyleft for p in photos.available_photos(copyleft=False))


@pytest.mark.parametrize('package,source,count', [('skimage', 'scikit-image', 9), ('sklearn', 'scikit-learn', 2),
                                                  ('matplotlib', 'matplotlib', 1)])
def test_pypi_source_found_when_installed(package, source, count):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f'{source} is not installed (pip install {source}): its photographs cannot be checked')
    found = photos.available_photos(sources=(source,))
    assert len(found) == count, [p.key for p in found]
    image = photos.load_photo(found[0])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 200 and image.std() > 20.0  # a real photograph, not a flat or tiny image


@NEEDS_PHOTOS
@pytest.mark.parametrize('height,width', [(480, 640), (720, 1280), (1080, 1920), (300, 90), (1, 1)])
def test_crop_shape_and_dtype(height, width):
    crop = photos.random_photo_crop(np.random.default_rng(3), height, width)
    assert crop.shape == (height, width, 3) and crop.dtype == np.uint8 and crop.flags.c_contiguous


@NEEDS_PHOTOS
def test_crops_are_deterministic_per_seed_and_vary_across_seeds():
    a = photos.random_photo_crop(np.random.default_rng(11), 120, 160)
    b = photos.random_photo_crop(np.random.default_rng(11), 120, 160)
    np.testing.assert_array_equal(a, b)
    others = [photos.random_photo_crop(np.random.default_rng(s), 120, 160) for s in range(12, 20)]
    assert all(not np.array_equal(a, o) for o in others)
    # different photographs are chosen: the crops' mean colours spread widely
    means = np.array([o.reshape(-1, 3).mean(axis=0) for o in others])
    assert means.std(axis=0).max() > 10.0


@NEEDS_PHOTOS
def test_flip_mirrors_the_same_window_and_no_jitter_keeps_colours():
    plain = photos.CropRanges(scale=(0.5, 0.5), brightness=(1.0, 1.0), channel_gain=(1.0, 1.0),
                              saturation=(1.0, 1.0), flip_probability=0.0)
    flipped = photos.CropRanges(scale=(0.5, 0.5), brightness=(1.0, 1.0), channel_gain=(1.0, 1.0),
                                saturation=(1.0, 1.0), flip_probability=1.0)
    a = photos.random_photo_crop(np.random.default_rng(5), 90, 120, ranges=plain)
    b = photos.random_photo_crop(np.random.default_rng(5), 90, 120, ranges=flipped)
    # equal but for interpolation: warpAffine quantises sub-pixel positions to 1/32 px, not symmetrically about the
    # flip, which moves a level or two on most pixels and at most 255/32 at a full-contrast edge (OpenCV 4.x shows
    # such pixels on the JPEG photos; a wrong window or an unflipped crop differs by tens of levels nearly everywhere)
    difference = np.abs(a.astype(int) - b[:, ::-1].astype(int))
    assert np.mean(difference <= 1) > 0.99 and difference.max() <= 8
    # the whole photograph at its own size comes back (up to interpolation) when the window is the full image
    photo = PHOTOS[0]
    image = photos.load_photo(photo)
    whole = photos.CropRanges(scale=(1.0, 1.0), brightness=(1.0, 1.0), channel_gain=(1.0, 1.0),
                              saturation=(1.0, 1.0), flip_probability=0.0)
    crop = photos.random_photo_crop(np.random.default_rng(0), image.shape[0], image.shape[1], photos=[photo],
                                    ranges=whole)
    assert np.abs(crop.astype(int) - image.astype(int)).max() <= 1


def test_fallback_and_clear_error_when_nothing_is_installed():
    rng = np.random.default_rng(2)
    out = photos.random_photo_crop(rng, 40, 60, photos=[], fallback=backgrounds.random_background)
    np.testing.assert_array_equal(out, backgrounds.random_background(np.random.default_rng(2), 40, 60))
    with pytest.raises(photos.NoPhotosError, match='install'):
        photos.random_photo_crop(rng, 40, 60, photos=[])
    with pytest.raises(TypeError):
        photos.random_photo_crop(np.random.RandomState(0), 40, 60)
    with pytest.raises(ValueError):
        photos.random_photo_crop(rng, 0, 60)
    assert photos.available_photos(sources=('no-such-source',)) == []


@NEEDS_PHOTOS
def test_cache_stays_bounded():
    info = photos.cache_info()
    try:
        photos.set_cache_limit(3 * 1024 * 1024)
        for photo in PHOTOS[:6]:
            photos.load_photo(photo)
            assert photos.cache_info()['bytes'] <= 3 * 1024 * 1024
    finally:
        photos.set_cache_limit(info['limit_bytes'])
