"""Files that are either the old version or the whole new one, never half written: calibrations, datasets, PNGs."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w') -> Iterator[IO]:
    """Write to a temp file beside `path`; on success flush it to disk and rename it over `path`, on any error
    remove it. `mode` is 'w' (UTF-8 text) or 'wb'."""
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp')
    # O_EXCL never follows a planted link; 0o666 lets the user's umask apply as for any new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({'encoding': 'utf-8'} if mode == 'w' else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename lives in the directory: sync it too, or a power cut can bring back the old file.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_imwrite(path: str | os.PathLike, image) -> None:
    """Encode `image` (as cv2.imwrite would, by the file's suffix) and write it atomically."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f'could not encode {path}')
    with atomic_open(path, 'wb') as f:
        f.write(buf.tobytes())


def append_json_line(fd: int, record, path: str | os.PathLike) -> None:
    """Append `record` as one JSON line with a single write() to `fd` (opened O_APPEND), so a reader sees the whole
    line or none of it; `path` names the file in errors."""
    import json

    line = (json.dumps(record) + '\n').encode()
    if os.write(fd, line) != len(line):
        raise OSError(f'short write to {path} (disk full?)')
