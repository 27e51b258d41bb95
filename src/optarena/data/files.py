"""Locate, verify (sha256) and download the dataset files that optarena's loaders read."""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per network operation while downloading


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is in none of the data directories and could not be downloaded."""


class DatasetChecksumError(ValueError):
    """A dataset file exists but its content does not have the expected sha256."""


@dataclass(frozen=True)
class DataFile:
    """One canonical dataset file: where it lives under a data directory, its checksum and source URL."""

    relpath: str  # e.g. "mnist/train-images-idx3-ubyte.gz"
    sha256: str  # of the decompressed content when gzip, else of the file
    url: str
    gzip: bool = False


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"

MNIST_TRAIN_IMAGES = DataFile(
    "mnist/train-images-idx3-ubyte.gz",
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    _MNIST + "train-images-idx3-ubyte.gz",
    gzip=True,
)
MNIST_TRAIN_LABELS = DataFile(
    "mnist/train-labels-idx1-ubyte.gz",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    _MNIST + "train-labels-idx1-ubyte.gz",
    gzip=True,
)
MNIST_TEST_IMAGES = DataFile(
    "mnist/t10k-images-idx3-ubyte.gz",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    _MNIST + "t10k-images-idx3-ubyte.gz",
    gzip=True,
)
MNIST_TEST_LABELS = DataFile(
    "mnist/t10k-labels-idx1-ubyte.gz",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    _MNIST + "t10k-labels-idx1-ubyte.gz",
    gzip=True,
)
TINY_SHAKESPEARE = DataFile(
    "tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
)
ADULT_TRAIN = DataFile(
    "uci-adult/adult.data",
    "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    _UCI + "adult/adult.data",
)
ADULT_TEST = DataFile(
    "uci-adult/adult.test",
    "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
    _UCI + "adult/adult.test",
)
LETTER_RECOGNITION = DataFile(
    "uci-letter-recognition/letter-recognition.data",
    "2b89f3602cf768d3c8355267d2f13f2417809e101fc2b5ceee10db19a60de6e2",
    _UCI + "letter-recognition/letter-recognition.data",
)
CALIFORNIA_HOUSING = DataFile(
    "california-housing/housing.csv",
    "8a3727f4cf54ac1a327f69b1d5b4db54c5834ea81c6e4efc0d163300022a685e",
    "https://raw.githubusercontent.com/ageron/handson-ml2/master/datasets/housing/housing.csv",
)

FILES: dict[str, DataFile] = {
    f.relpath: f
    for f in (
        MNIST_TRAIN_IMAGES,
        MNIST_TRAIN_LABELS,
        MNIST_TEST_IMAGES,
        MNIST_TEST_LABELS,
        TINY_SHAKESPEARE,
        ADULT_TRAIN,
        ADULT_TEST,
        LETTER_RECOGNITION,
        CALIFORNIA_HOUSING,
    )
}

# (resolved path, size, mtime_ns, gzip) -> sha256 of the content, so repeated lookups don't rehash.
_VERIFIED: dict[tuple[str, int, int, bool], str] = {}


def cache_dir() -> Path:
    """The per-user directory that downloads go to."""
    if explicit := os.environ.get("OPTARENA_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "optarena" / "data"


def search_dirs() -> list[Path]:
    """Directories searched for dataset files, in order: each of $OPTARENA_DATA_DIR, then the user cache."""
    data_dirs = os.environ.get("OPTARENA_DATA_DIR", "").split(os.pathsep)
    return [*(Path(d).expanduser() for d in data_dirs if d), cache_dir()]


def downloads_allowed() -> bool:
    """Whether missing files may be downloaded: yes unless $OPTARENA_NO_DOWNLOAD is set (and not "0")."""
    return os.environ.get("OPTARENA_NO_DOWNLOAD", "") in ("", "0")


def _hash(path: Path, gzipped: bool) -> str:
    """Stream the file (decompressing when gzipped) through sha256."""
    digest = hashlib.sha256()
    with gzip_module.open(path, "rb") if gzipped else path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: Path, gzipped: bool) -> str:
    """sha256 of the file's content (decompressed when gzipped), memoised per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, gzipped)
    if key not in _VERIFIED:
        _VERIFIED[key] = _hash(path, gzipped)
    return _VERIFIED[key]


def _checksum_error(datafile: DataFile, path: Path, actual: str) -> DatasetChecksumError:
    what = "decompressed content" if datafile.gzip else "file"
    return DatasetChecksumError(
        f"Checksum mismatch for {path} (dataset file {datafile.relpath!r}): sha256 of the {what} is "
        f"{actual}, expected {datafile.sha256}. The file is corrupt or a different version: delete it and "
        f"re-download it from {datafile.url}."
    )


def _not_found_message(datafile: DataFile, dirs: list[Path], reason: str) -> str:
    looked = "\n".join(f"  {d / datafile.relpath}" for d in dirs)
    return (
        f"Dataset file {datafile.relpath!r} was not found. Looked in these directories:\n{looked}\n"
        f"{reason}\nDownload it from {datafile.url}, or set OPTARENA_DATA_DIR to a directory holding "
        f"{datafile.relpath!r}."
    )


def _download(datafile: DataFile, dest: Path) -> Path:
    """Download to a temp file beside dest, verify its checksum, then move it into place atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"optarena: downloading {datafile.url} -> {dest}", file=sys.stderr)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(datafile.url, timeout=_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        actual = _hash(tmp, datafile.gzip)
        if actual != datafile.sha256:
            raise DatasetChecksumError(
                f"content downloaded from {datafile.url} has sha256 {actual}, expected {datafile.sha256}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def locate(datafile: DataFile, download: bool | None = None) -> Path:
    """Path of a verified copy of `datafile`, downloading it into the user cache when missing and allowed.

    `download=None` means: allowed unless $OPTARENA_NO_DOWNLOAD is set.
    """
    dirs = search_dirs()
    mismatches: list[DatasetChecksumError] = []
    for directory in dirs:
        path = directory / datafile.relpath
        if not path.is_file():
            continue
        actual = content_sha256(path, datafile.gzip)
        if actual == datafile.sha256:
            return path
        mismatches.append(_checksum_error(datafile, path, actual))
        logger.warning("%s", mismatches[-1])
    if mismatches:
        raise mismatches[0]
    if not (downloads_allowed() if download is None else download):
        reason = "Downloads are disabled (download=False or $OPTARENA_NO_DOWNLOAD is set)."
        raise DatasetNotFoundError(_not_found_message(datafile, dirs, reason))
    try:
        return _download(datafile, dirs[-1] / datafile.relpath)
    except Exception as exc:
        reason = f"Downloading it failed: {exc}"
        raise DatasetNotFoundError(_not_found_message(datafile, dirs, reason)) from exc


def open_bytes(datafile: DataFile, download: bool | None = None) -> bytes:
    """The verified content of `datafile` (decompressed when gzip)."""
    path = locate(datafile, download)
    with gzip_module.open(path, "rb") if datafile.gzip else path.open("rb") as f:
        return f.read()
