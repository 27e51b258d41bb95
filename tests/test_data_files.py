"""Locating, verifying and downloading dataset files (no network: downloads use file:// URLs)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import pytest

from optarena.data import files
from optarena.data.files import (
    FILES,
    DataFile,
    DatasetChecksumError,
    DatasetNotFoundError,
    locate,
    open_bytes,
    search_dirs,
)

RELPATH = "toy/values.txt"
CONTENT = b"1,2,3\n4,5,6\n"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data dirs, downloads allowed, an empty cache under tmp_path, and an empty checksum memo."""
    for var in ("OPTARENA_DATA_DIR", "OPTARENA_NO_DOWNLOAD", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPTARENA_CACHE_DIR", str(cache))
    monkeypatch.setattr(files, "_VERIFIED", {})
    return cache


def write(root: Path, content: bytes = CONTENT, relpath: str = RELPATH) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def toy_file(source: Path, content: bytes = CONTENT, gzipped: bool = False) -> DataFile:
    """A DataFile whose URL is a file:// URL of `source` (written with `content`, gzipped if asked)."""
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(gzip.compress(content) if gzipped else content)
    relpath = RELPATH + (".gz" if gzipped else "")
    return DataFile(relpath, hashlib.sha256(content).hexdigest(), source.as_uri(), gzip=gzipped)


def test_table_lists_every_shared_file() -> None:
    assert len(FILES) == 9
    for relpath, datafile in FILES.items():
        assert datafile.relpath == relpath
        assert len(datafile.sha256) == 64 and int(datafile.sha256, 16) >= 0
        assert datafile.url.startswith("https://") and datafile.url.endswith(Path(relpath).name)
        assert datafile.gzip == relpath.endswith(".gz")


def test_search_dirs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    assert search_dirs() == [isolated_env]
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("OPTARENA_DATA_DIR", os.pathsep.join([str(a), "", str(b)]))
    assert search_dirs() == [a, b, isolated_env]


def test_cache_dir_fallbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTARENA_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert search_dirs() == [tmp_path / "home" / ".cache" / "optarena" / "data"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert search_dirs() == [tmp_path / "xdg" / "optarena" / "data"]


def test_data_dir_wins_over_cache_and_later_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    datafile = toy_file(tmp_path / "src.txt")
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("OPTARENA_DATA_DIR", os.pathsep.join([str(a), str(b)]))
    write(isolated_env)
    assert locate(datafile, download=False) == isolated_env / RELPATH
    write(b)
    assert locate(datafile, download=False) == b / RELPATH
    write(a)
    assert locate(datafile, download=False) == a / RELPATH
    assert open_bytes(datafile, download=False) == CONTENT


def test_gzip_checksum_is_of_decompressed_content(tmp_path: Path, isolated_env: Path) -> None:
    datafile = toy_file(tmp_path / "src.txt.gz", gzipped=True)
    write(isolated_env, gzip.compress(CONTENT, mtime=0), datafile.relpath)
    assert locate(datafile, download=False) == isolated_env / datafile.relpath
    assert open_bytes(datafile, download=False) == CONTENT


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path: Path, isolated_env: Path) -> None:
    datafile = toy_file(tmp_path / "src.txt")
    bad = write(isolated_env, b"tampered")
    with pytest.raises(DatasetChecksumError) as info:
        locate(datafile)  # a corrupt file is reported, not silently replaced by a download
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(bad) in message and datafile.sha256 in message and datafile.url in message
    assert hashlib.sha256(b"tampered").hexdigest() in message and "delete" in message


def test_corrupt_copy_is_skipped_when_a_later_dir_has_a_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    datafile = toy_file(tmp_path / "src.txt")
    monkeypatch.setenv("OPTARENA_DATA_DIR", str(tmp_path / "a"))
    write(tmp_path / "a", b"tampered")
    write(isolated_env)
    assert locate(datafile, download=False) == isolated_env / RELPATH


@pytest.mark.parametrize("disable", ["argument", "env"])
def test_not_found_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path, disable: str) -> None:
    datafile = toy_file(tmp_path / "src.txt")
    dirs = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("OPTARENA_DATA_DIR", os.pathsep.join(map(str, dirs)))
    if disable == "env":
        monkeypatch.setenv("OPTARENA_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetNotFoundError) as info:
        locate(datafile, download=False if disable == "argument" else None)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for directory in [*dirs, isolated_env]:
        assert str(directory) in message
    assert RELPATH in message and datafile.url in message and "OPTARENA_DATA_DIR" in message
    assert not isolated_env.exists()


def test_no_download_env_zero_means_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTARENA_NO_DOWNLOAD", "0")
    assert files.downloads_allowed()
    monkeypatch.setenv("OPTARENA_NO_DOWNLOAD", "yes")
    assert not files.downloads_allowed()


@pytest.mark.parametrize("gzipped", [False, True])
def test_download_into_cache(
    tmp_path: Path, isolated_env: Path, capsys: pytest.CaptureFixture[str], gzipped: bool
) -> None:
    datafile = toy_file(tmp_path / "remote" / "src", gzipped=gzipped)
    path = locate(datafile)
    assert path == isolated_env / datafile.relpath
    assert open_bytes(datafile) == CONTENT
    assert datafile.url in capsys.readouterr().err
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_corrupt_download_is_rejected_and_removed(tmp_path: Path, isolated_env: Path) -> None:
    datafile = dataclasses.replace(toy_file(tmp_path / "src.txt"), sha256="0" * 64)
    with pytest.raises(DatasetNotFoundError, match="0{64}") as info:
        locate(datafile)
    assert isinstance(info.value.__cause__, DatasetChecksumError)
    assert list((isolated_env / RELPATH).parent.iterdir()) == []


def test_failed_download_raises_not_found(tmp_path: Path, isolated_env: Path) -> None:
    datafile = DataFile(RELPATH, "0" * 64, (tmp_path / "missing.txt").as_uri())
    with pytest.raises(DatasetNotFoundError, match="Downloading it failed"):
        locate(datafile)
    assert list((isolated_env / RELPATH).parent.iterdir()) == []


def test_verified_checksum_is_memoised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    datafile = toy_file(tmp_path / "src.txt")
    path = write(isolated_env)
    calls: list[Path] = []
    real_hash = files._hash

    def counting_hash(p: Path, gzipped: bool) -> str:
        calls.append(p)
        return real_hash(p, gzipped)

    monkeypatch.setattr(files, "_hash", counting_hash)
    for _ in range(3):
        assert locate(datafile, download=False) == path
    assert calls == [path]
    path.write_bytes(b"changed content")  # a new size (and mtime) invalidates the memo
    with pytest.raises(DatasetChecksumError):
        locate(datafile, download=False)
    assert len(calls) == 2
