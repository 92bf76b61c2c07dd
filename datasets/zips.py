"""Zip archives of annotated images, read safely: every member is checked before anything is read, and the layouts
annotation tools export are recognised. Nothing is ever extracted: the importer reads image members straight from
the checked archive (``coco_import.ZipImages``), so no member name ever becomes a path on disk; the uploaded archive
itself waits in a private folder (mode 0700) that is removed when its import ends (``imports.py``).

Refused, with the reason: a file that is not a zip (or is empty); member names that climb out (``..``), are
absolute or carry a drive letter; symlinks; zips inside the zip; more members, more uncompressed bytes, or a higher
compression ratio than the limits allow (zip bombs). The sizes a zip declares are the sizes read: Python's zipfile
stops reading a member at its declared size and checks its CRC.
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from core.errors import ApplicationError

# The COCO files annotation tools export, by layout, relative to the archive's root (or its one top folder).
LAYOUTS = {
    "annotations/instances_default.json": "CVAT (COCO 1.0)",
    "result.json": "Label Studio (COCO)",
    "annotations.json": "plain COCO",
}
_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED = ("__MACOSX/",)
# A member whose data compresses better than this is a bomb, not an image or a JSON file (JPEG and PNG barely
# compress; COCO JSON reaches 10-30x). Below the size floor a high ratio is harmless (a tiny, repetitive file).
RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ZipLimits:
    max_members: int
    max_bytes: int  # uncompressed, all members together
    max_ratio: float  # uncompressed / compressed, per member above RATIO_FLOOR_BYTES and for the whole archive

    @classmethod
    def from_settings(cls) -> ZipLimits:
        return cls(settings.DUMPSITE_ZIP_MAX_MEMBERS, settings.DUMPSITE_ZIP_MAX_BYTES, settings.DUMPSITE_ZIP_MAX_RATIO)


@dataclass(frozen=True)
class ZipContents:
    """What a checked archive holds: its files (no folders), their total size, and its COCO file."""

    files: tuple[str, ...]
    total_bytes: int
    coco_file: str
    layout: str
    root: str  # the folder the layout is relative to ("" or "top-folder/")


def _refuse(message: str, **extra) -> ApplicationError:
    return ApplicationError(message, {"archive": message, **extra})


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why one member may not be extracted, or None."""
    name = info.filename
    if "\x00" in name:
        return f"{name!r} has a NUL character in its name"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return f"{name!r} is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return f"{name!r} climbs out of the archive (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"{name!r} is a symbolic link"
    if name.lower().endswith((".zip", ".tar", ".tgz", ".gz", ".7z", ".rar")):
        return f"{name!r} is an archive inside the archive"
    return None


def check_zip(path: Path, limits: ZipLimits, *, coco_file: str | None = None) -> ZipContents:
    """Check every member of the zip at ``path`` against ``limits`` and find its COCO file (``coco_file`` names it
    when the archive holds several JSON files). Nothing is extracted; ApplicationError says what is wrong."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise _refuse("The file is empty (0 bytes), not a zip archive.")
    declared = declared_members(path)
    if declared is None:
        raise _refuse("The file is not a zip archive (no end of central directory).")
    if declared > limits.max_members:
        raise _refuse(f"The archive has {declared:,} members; at most {limits.max_members:,} are accepted.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise _refuse(f"The file is not a zip archive ({exc}).") from exc
    with archive:
        infos = [i for i in archive.infolist() if not i.filename.startswith(_IGNORED)]
    if len(infos) > limits.max_members:
        raise _refuse(f"The archive has {len(infos)} members; at most {limits.max_members} are accepted.")
    problems = [p for p in map(member_problem, infos) if p]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise _refuse(f"The archive is refused: {'; '.join(problems[:3])}{more}.", members=problems[:20])
    files = [i for i in infos if not i.is_dir()]
    total = sum(i.file_size for i in files)
    if total > limits.max_bytes:
        raise _refuse(f"The archive unpacks to {total:,} bytes; at most {limits.max_bytes:,} are accepted.")
    compressed = sum(i.compress_size for i in files)
    for info in files:
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
            raise _refuse(
                f"{info.filename!r} unpacks {ratio:,.0f} times its compressed size (at most {limits.max_ratio:g}): "
                "a zip bomb, not annotated images."
            )
    if total > RATIO_FLOOR_BYTES and total / max(1, compressed) > limits.max_ratio:
        raise _refuse(
            f"The archive unpacks {total / max(1, compressed):,.0f} times its compressed size "
            f"(at most {limits.max_ratio:g}): a zip bomb, not annotated images."
        )
    names = tuple(i.filename for i in files)
    found, layout, root = find_coco_file(names, chosen=coco_file)
    check_coco_size(next(i.file_size for i in files if i.filename == found), found)
    return ZipContents(files=names, total_bytes=total, coco_file=found, layout=layout, root=root)


def check_coco_size(size: int, label: str) -> None:
    """A COCO file is parsed whole: past ``DUMPSITE_COCO_MAX_JSON_BYTES`` it is refused, before a byte is parsed."""
    limit = settings.DUMPSITE_COCO_MAX_JSON_BYTES
    if size > limit:
        raise ApplicationError(
            f"{label} is {size:,} bytes; a COCO file may have at most {limit:,} (DUMPSITE_COCO_MAX_JSON_BYTES).",
            {"coco_file": "too large", "limit": "DUMPSITE_COCO_MAX_JSON_BYTES"},
        )


def declared_members(path: Path) -> int | None:
    """The member count the archive's end record declares (zip64 too), read before its central directory is: a
    zip declaring millions of members is refused without building a list of them. None: no end record."""
    with open(path, "rb") as fh:
        # The stdlib's own reader of the end record (ZipFile uses it the same way); private, so untyped.
        record = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    return None if record is None else int(record[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def find_coco_file(names: tuple[str, ...] | list[str], *, chosen: str | None = None) -> tuple[str, str, str]:
    """The archive's COCO file, its layout and the folder it is relative to. Known layouts are found at the root
    or under one top folder; otherwise the one JSON file; with several, ``chosen`` must name one of them."""
    jsons = sorted(n for n in names if n.lower().endswith(".json"))
    if chosen is not None:
        if chosen not in jsons:
            raise _refuse(
                f"The archive has no JSON file {chosen!r}; it has: {', '.join(jsons) or 'none'}.", json_files=jsons
            )
        return chosen, LAYOUTS.get(_relative(chosen), "the chosen file"), _root_of(chosen)
    if not jsons:
        raise _refuse("The archive holds no COCO JSON file.")
    tops = {n.split("/", 1)[0] + "/" for n in names if "/" in n}
    roots = [""] + (sorted(tops) if len(tops) == 1 else [])
    for root in roots:
        for relative, layout in LAYOUTS.items():
            if root + relative in jsons:
                return root + relative, layout, root
    if len(jsons) == 1:
        return jsons[0], "a single COCO file", _root_of(jsons[0])
    raise _refuse(
        f"The archive holds {len(jsons)} JSON files; say which is the COCO file: {', '.join(jsons)}.",
        json_files=jsons,
    )


def _relative(name: str) -> str:
    parts = PurePosixPath(name).parts
    for i in range(len(parts)):
        if "/".join(parts[i:]) in LAYOUTS:
            return "/".join(parts[i:])
    return name


def _root_of(coco_file: str) -> str:
    """The folder image paths are relative to: the one holding a known layout, else the JSON file's own folder."""
    relative = _relative(coco_file)
    if relative in LAYOUTS:
        return coco_file[: len(coco_file) - len(relative)]
    parent = str(PurePosixPath(coco_file).parent)
    return "" if parent == "." else f"{parent}/"
