"""Writing parts to disk: one GLB scene with a named node per part, optional per-part files, a manifest.

Files are only ever written under the caller's output folder, with sanitised names, never over an
existing file, and atomically: everything is first written to temporary files, then each is linked
to its final name (``os.link`` refuses to replace an existing file), so an interrupted or failed run
leaves no partial output behind. A writer killed outright (SIGKILL, out-of-memory kill, power loss)
cannot clean up after itself; its temporaries carry its host and process id in their name, and the
next export into the same folder sweeps those whose writer is gone (see :func:`sweep_stale_temporaries`).
"""

from __future__ import annotations

import json
import logging
import os
import errno
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..checks import refuse_non_finite
from ..parts import Part
from ..runtime import Runtime

logger = logging.getLogger(__name__)

PART_FORMATS = ("glb", "obj", "stl", "ply")
_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")
# File names are limited to 255 bytes on every common file system, and the counter, "_exploded", a
# part name and the suffix are appended to the prefix's last component; sanitised names are ASCII,
# so characters are bytes here.
MAX_PREFIX_CHARS = 200
MAX_NAME_CHARS = 100
MAX_PART_NAME_CHARS = 64
_TEMPORARY_PREFIX = ".partgen-"
_TEMPORARY_SUFFIX = ".tmp"
# A temporary whose writer cannot be checked (another host, or no process table to ask) is stale once
# it is this old: a live writer links its temporaries seconds after writing them.
STALE_AFTER_S = 3600.0


class ExportError(ValueError):
    """The parts or the destination are not valid; nothing was written."""


@dataclass(frozen=True)
class ExportOptions:
    """What to write.

    filename_prefix: "sub/folder/name" relative to the output folder; sanitised.
    part_format: also write each part to its own file in this format ("none" to skip).
    exploded: push parts apart along their centroid directions by this share of the object's size
        (0 = assembled), for inspection.
    metadata: settings and seeds that produced the parts, copied into the manifest.
    """

    filename_prefix: str = "partgen/parts"
    part_format: str = "none"
    exploded: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        refuse_non_finite(self, ExportError)
        if self.part_format not in PART_FORMATS + ("none",):
            raise ExportError(f"part_format must be one of {PART_FORMATS + ('none',)}, got {self.part_format!r}")
        if not 0.0 <= self.exploded <= 10.0:
            raise ExportError(f"exploded must be within 0..10, got {self.exploded}")


@dataclass(frozen=True)
class ExportResult:
    scene: Path  # relative to the output folder
    manifest: Path
    part_files: tuple[Path, ...]


def sanitize_prefix(prefix: str) -> tuple[Path, str]:
    """``"a/b/name"`` → (subfolder, base name); refuses absolute paths, ``..`` and overlong names."""
    text = prefix.strip().replace("\\", "/")
    if not text:
        raise ExportError("filename_prefix is empty; give a name such as 'partgen/chair'")
    if len(text) > MAX_PREFIX_CHARS:
        raise ExportError(
            f"filename_prefix is {len(text)} characters long ({text[:40]!r}...); give at most {MAX_PREFIX_CHARS}, "
            f"such as 'partgen/chair'"
        )
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ExportError(f"filename_prefix {prefix!r} is an absolute path; give a path relative to the output folder")
    components = [c for c in text.split("/") if c not in ("", ".")]
    if any(c == ".." for c in components):
        raise ExportError(f"filename_prefix {prefix!r} contains '..'; files stay inside the output folder")
    cleaned = [(_SAFE.sub("_", c).strip(" .") or "_") for c in components]
    if not cleaned:
        raise ExportError(f"filename_prefix {prefix!r} has no usable name")
    too_long = [c for c in cleaned if len(c) > MAX_NAME_CHARS]
    if too_long:
        raise ExportError(
            f"filename_prefix has a folder or file name of {len(too_long[0])} characters ({too_long[0][:40]!r}...); "
            f"keep each name between '/' to at most {MAX_NAME_CHARS} characters (file names are limited to 255 "
            f"bytes, and a counter and the part names are appended)"
        )
    return Path(*cleaned[:-1]) if len(cleaned) > 1 else Path(), cleaned[-1]


def part_file_name(name: str) -> str:
    return (_SAFE.sub("_", name).strip(" .") or "part")[:MAX_PART_NAME_CHARS]


def check_parts(parts: Sequence[Part]) -> None:
    if not parts:
        raise ExportError("there are no parts to export; check the reconstruction step")
    for part in parts:
        if part.faces.shape[0] == 0:
            raise ExportError(f"part {part.name!r} has no faces")
        if not torch.isfinite(part.vertices).all():
            raise ExportError(f"part {part.name!r} has NaN or infinite vertices")
        if part.faces.min() < 0 or part.faces.max() >= part.vertices.shape[0]:
            raise ExportError(f"part {part.name!r} has faces that index missing vertices")
    names = [p.name for p in parts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportError(f"part names must be unique; repeated: {', '.join(duplicates)}")


def _unique_names(parts: Sequence[Part]) -> list[str]:
    """File-safe names, kept distinct after sanitising."""
    seen: dict[str, int] = {}
    names = []
    for part in parts:
        base = part_file_name(part.name)
        count = seen.get(base, 0)
        seen[base] = count + 1
        names.append(base if count == 0 else f"{base}_{count}")
    return names


def exploded_offsets(parts: Sequence[Part], amount: float) -> list[np.ndarray]:
    """Per-part translation pushing each part away from the object's centre along its centroid
    direction, scaled by ``amount`` times the object's bounding-box diagonal."""
    centroids = [placed_vertices(p).mean(0) for p in parts]
    everything = torch.from_numpy(np.concatenate([placed_vertices(p) for p in parts]))
    centre = everything.mean(0).numpy()
    diagonal = float((everything.amax(0) - everything.amin(0)).norm())
    offsets = []
    for centroid in centroids:
        direction = centroid - centre
        length = np.linalg.norm(direction)
        offsets.append(direction / length * amount * diagonal if length > 1e-9 else np.zeros(3))
    return offsets


def placed_vertices(part: Part) -> np.ndarray:
    """The part's vertices with its ``transform`` applied (identity for reconstructed parts)."""
    vertices = part.vertices.double().numpy()
    transform = part.transform.double().numpy()
    return vertices @ transform[:3, :3].T + transform[:3, 3]


def _trimesh(part: Part, offset: np.ndarray):
    import trimesh

    vertices = placed_vertices(part) + offset
    colors = (part.vertex_colors.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    rgba = np.concatenate([colors, np.full((colors.shape[0], 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(vertices=vertices, faces=part.faces.numpy(), vertex_colors=rgba, process=False)


def _scene_glb(parts: Sequence[Part], names: Sequence[str], offsets: Sequence[np.ndarray]) -> bytes:
    import trimesh

    scene = trimesh.Scene()
    for part, name, offset in zip(parts, names, offsets):
        scene.add_geometry(_trimesh(part, offset), node_name=part.name, geom_name=name)
    return scene.export(file_type="glb")


def _part_file(part: Part, name: str, offset: np.ndarray, file_format: str) -> bytes:
    import trimesh

    mesh = _trimesh(part, offset)
    if file_format == "glb":  # a one-node scene keeps the part's name
        scene = trimesh.Scene()
        scene.add_geometry(mesh, node_name=part.name, geom_name=name)
        return scene.export(file_type="glb")
    data = mesh.export(file_type=file_format)
    return data.encode("utf-8") if isinstance(data, str) else data


def _manifest(parts, names, offsets, files: dict[str, str], options: ExportOptions) -> dict:
    entries = []
    for part, name, offset in zip(parts, names, offsets):
        vertices = torch.from_numpy(placed_vertices(part) + offset)
        entries.append({
            "name": part.name,
            "file": files.get(part.name),
            "display_color": list(part.display_color) if part.display_color else None,
            "vertices": int(part.vertices.shape[0]),
            "faces": part.num_faces,
            "bbox_min": vertices.amin(0).tolist(),
            "bbox_max": vertices.amax(0).tolist(),
            "transform": part.transform.tolist(),
            "exploded_offset": offset.tolist(),
        })
    return {"format": "partgen-parts/1", "frame": "glTF: Y up, right-handed; front faces +Z",
            "scene": files["__scene__"], "parts": entries, "settings": options.metadata}


def _next_counter(folder: Path, base: str) -> int:
    pattern = re.compile(re.escape(base) + r"_(\d{5})")
    used = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(used, default=0) + 1


def export_parts(
    parts: Sequence[Part],
    output_dir: Path,
    options: ExportOptions = ExportOptions(),
    runtime: Optional[Runtime] = None,
) -> ExportResult:
    """Write the scene GLB, the manifest and optional per-part files; return paths relative to ``output_dir``.

    ``runtime.check_interrupt`` is honoured between files; an interrupt leaves no file behind.
    """
    check_interrupt = runtime.check_interrupt if runtime is not None else (lambda: None)
    check_parts(parts)
    output_dir = Path(output_dir).resolve()
    subfolder, base = sanitize_prefix(options.filename_prefix)
    folder = (output_dir / subfolder).resolve()
    if os.path.commonpath([output_dir, folder]) != str(output_dir):
        raise ExportError(f"filename_prefix {options.filename_prefix!r} leaves the output folder")
    names = _unique_names(parts)
    offsets = exploded_offsets(parts, options.exploded) if options.exploded else [np.zeros(3)] * len(parts)

    # Everything is encoded before anything touches the disk.
    suffix = "_exploded" if options.exploded else ""
    stem_template = f"{base}_{{counter:05}}{suffix}"
    payload = {"scene": _scene_glb(parts, names, offsets)}
    if options.part_format != "none":
        for part, name, offset in zip(parts, names, offsets):
            payload[f"part:{part.name}"] = _part_file(part, name, offset, options.part_format)

    _make_folder(folder, options.filename_prefix)
    sweep_stale_temporaries(folder)
    for _attempt in range(100):
        counter = _next_counter(folder, base)
        stem = stem_template.format(counter=counter)
        files = {"__scene__": f"{stem}.glb"}
        contents = {f"{stem}.glb": payload["scene"]}
        for part, name in zip(parts, names):
            if f"part:{part.name}" in payload:
                files[part.name] = f"{stem}_{name}.{options.part_format}"
                contents[files[part.name]] = payload[f"part:{part.name}"]
        manifest_name = f"{stem}.json"
        contents[manifest_name] = json.dumps(_manifest(parts, names, offsets, files, options), indent=2).encode()
        if _write_all_or_nothing(folder, contents, check_interrupt, options.filename_prefix):
            break
    else:
        raise ExportError(f"could not find a free file name for {base!r} in {folder}")
    relative = lambda name: subfolder / name  # noqa: E731
    part_files = tuple(relative(files[p.name]) for p in parts if p.name in files)
    logger.info("wrote %s (%d parts)", folder / files["__scene__"], len(parts))
    return ExportResult(scene=relative(files["__scene__"]), manifest=relative(manifest_name), part_files=part_files)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_folder(folder: Path, prefix: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(
            f"cannot create the folder {folder} for filename_prefix {prefix!r}: {error.strerror or error}; "
            f"give another filename_prefix (a file may already have that name)"
        ) from None


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:24] or "host"


def _temporary_prefix() -> str:
    """``.partgen-<host>-<pid>-``: lets a later export tell whether the writer still runs."""
    return f"{_TEMPORARY_PREFIX}{_host_tag()}-{os.getpid()}-"


_TEMPORARY_NAME = re.compile(re.escape(_TEMPORARY_PREFIX) + r"(?:([A-Za-z0-9]+)-(\d+)-)?.*" + re.escape(_TEMPORARY_SUFFIX) + "$")


def _writer_gone(host: Optional[str], pid: Optional[str]) -> bool:
    """True only when the writer is known to have ended (same host, no such process)."""
    if host is None or host != _host_tag() or os.name != "posix":
        return False  # another machine, an older name without a pid, or no safe way to ask (Windows)
    if int(pid) == os.getpid():
        return False  # this process: another thread may be writing
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists under another user, or cannot be asked
    return False


def sweep_stale_temporaries(folder: Path, now: Optional[float] = None) -> list[Path]:
    """Remove temporaries left in ``folder`` by writers that were killed; return what was removed.

    A temporary is stale when its writer (same host) no longer runs, or when it is older than
    :data:`STALE_AFTER_S` (other hosts, pid reuse, older names). Final names are never touched.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY_NAME.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if _writer_gone(match.group(1), match.group(2)) or age > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue  # swept by another export at the same time
        except OSError as error:
            logger.warning("could not remove the stale temporary %s: %s", entry.path, error)
    if removed:
        logger.info("removed %d temporary file(s) left in %s by an interrupted save", len(removed), folder)
    return removed


def _write_all_or_nothing(
    folder: Path, contents: dict[str, bytes], check_interrupt: Callable[[], None], prefix: str
) -> bool:
    """Write every file or none; False when a final name is already taken (then nothing is left).

    ``check_interrupt`` runs before each file; an interrupt removes everything written so far.
    """
    temporaries: dict[str, str] = {}
    linked: list[Path] = []
    name = ""
    try:
        for name, data in contents.items():
            check_interrupt()
            handle, temporary = tempfile.mkstemp(prefix=_temporary_prefix(), suffix=_TEMPORARY_SUFFIX, dir=folder)
            temporaries[name] = temporary
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
        check_interrupt()
        for name, temporary in temporaries.items():
            final = folder / name
            os.link(temporary, final)  # fails if the name exists: never overwrite
            linked.append(final)
        return True
    except FileExistsError:
        for path in linked:
            path.unlink(missing_ok=True)
        return False
    except OSError as error:
        for path in linked:
            path.unlink(missing_ok=True)
        # Name the file the user asked for, not the internal temporary.
        hint = (
            "give a shorter filename_prefix" if error.errno == errno.ENAMETOOLONG
            else "free some disk space" if error.errno == errno.ENOSPC
            else "check the folder's permissions and free space"
        )
        raise ExportError(
            f"could not write {name} in {folder} (filename_prefix {prefix!r}): {error.strerror or error}; {hint}"
        ) from None
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    finally:
        for temporary in temporaries.values():
            Path(temporary).unlink(missing_ok=True)
