"""Where the package's data (config/, models/, launch/) lives: the source tree in a checkout or editable install,
the ament share directory in a colcon install (where the source tree is not shipped)."""
from functools import lru_cache
from pathlib import Path

PACKAGE = 'kp_pose_ros'
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def data_dir(kind: str) -> Path:
    """Directory holding `kind` ('config', 'models' or 'launch')."""
    source = _SOURCE_ROOT / kind
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / kind


def config_file(name: str) -> Path:
    return data_dir('config') / name


def model_file(name: str) -> Path:
    return data_dir('models') / name


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data beside the repository (development data sets, kept out of the repository for
    their licences). It may not exist (a colcon install, another machine): callers check and say so."""
    return _SOURCE_ROOT.parent.parent.joinpath('shared', 'data', *parts)
