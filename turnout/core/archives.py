"""Unpacking an uploaded folder (``.tar.gz`` or ``.zip``) with nothing
trusted: a member that is a link, a device, an absolute path or one that
climbs out with ``..`` is refused by name, and the unpacked size is bounded
(an archive can claim any sizes; each member is counted as it is written)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from turnout.core.errors import ModelNotAdded, PayloadTooLarge

_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def _safe_name(name: str) -> PurePosixPath:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or name.startswith("/"):
        raise ModelNotAdded(f"archive member {name!r} is outside its folder; refused")
    return rel


def unpack(archive: Path, target: Path, max_bytes: int) -> Path:
    """Unpack ``archive`` into ``target`` (new); returns the model's folder:
    the one top-level folder when there is just one, else ``target``."""
    target.mkdir(parents=True)
    written = 0

    def copy(src: object, rel: PurePosixPath) -> None:
        nonlocal written
        out = target.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as dst:
            while chunk := src.read(_CHUNK):  # type: ignore[attr-defined]
                written += len(chunk)
                if written > max_bytes:
                    raise PayloadTooLarge(f"the archive unpacks to more than {max_bytes} bytes "
                                          "(TURNOUT_MAX_UNPACKED_BYTES)")
                dst.write(chunk)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = _safe_name(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise ModelNotAdded(f"archive member {info.filename!r} is a link; refused")
                if info.is_dir():
                    continue
                with zf.open(info) as src:
                    copy(src, rel)
    else:
        with tarfile.open(archive) as tf:
            for member in tf:
                rel = _safe_name(member.name)
                if member.issym() or member.islnk():
                    raise ModelNotAdded(f"archive member {member.name!r} is a link; refused")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ModelNotAdded(f"archive member {member.name!r} is not a plain file; "
                                        "refused")
                extracted = tf.extractfile(member)
                if extracted is not None:
                    copy(extracted, rel)
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if not entries:
        shutil.rmtree(target, ignore_errors=True)
        raise ModelNotAdded("the archive holds no files")
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target
