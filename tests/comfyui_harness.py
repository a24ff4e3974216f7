"""Obtain a real ComfyUI and drive it against this node pack (test tiers 2 and 3).

Obtaining and starting a ComfyUI is tooling shared with ``tools/``: it lives in
``partgen_tools/comfyui_host.py`` (hosts, download and unpack into ``.cache/``, the base directory,
``ComfyUIServer``) and is re-exported here, so tests keep writing ``harness.comfyui_root(host)``.
This file adds what only tests need: the example inputs and placeholder model files in the base
directory, the shipped API workflows, the websocket client of a queued prompt and the tier-2 executor.
Tests run on each host (``selected_hosts``; ``$PARTGEN_COMFYUI_HOSTS=0.30.0`` narrows the set).

Everything here (and in ``comfyui_host``) is standard library only, so importing it from ``conftest.py``
costs nothing.
The same file is also the tier-2 runner: ``python tests/comfyui_harness.py run-executor ...`` imports
ComfyUI in a fresh interpreter and runs prompts through ``execution.PromptExecutor`` without a server.
It is a subprocess on purpose: ComfyUI needs its root first on ``sys.path`` and owns top-level module
names (``nodes``, ``utils``, ``execution``, ``server``, ``comfy``, ``app``) that collide with this repo's
own ``nodes/`` package and with whatever stubs tier-1 tests put in ``sys.modules``; it also reads
global CLI args and mutates global state (folder paths, interrupt flag, progress hook) once per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# This checkout's tooling, whatever else is installed (an editable install may point at another
# checkout); the executor child takes it off sys.path again before importing ComfyUI.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from partgen_tools import comfyui_host as _host  # noqa: E402
from partgen_tools.comfyui_host import (  # noqa: E402,F401  (re-exported for the tests)
    CACHE_DIR, COMFYUI_IMPORTS, HOST_0_3_75, HOST_0_30_0, HOSTS, OLDEST_HOST, PACK_DIR_NAME,
    ComfyUIHost, ComfyUIUnavailable, comfyui_root, download_comfyui_archive, ensure_cached_comfyui,
    free_port, missing_comfyui_imports, selected_hosts, unpack_comfyui, write_tiny_models)
from partgen_tools.comfyui_host import child_env as _child_env, tail as _tail  # noqa: E402

EXAMPLE_IMAGE = REPO_ROOT / "example_workflows" / "partgen_example_object.png"
EXAMPLE_MESH = REPO_ROOT / "example_workflows" / "partgen_example_chair.glb"  # input/3d/, where ComfyUI keeps uploaded meshes
API_WORKFLOWS = REPO_ROOT / "example_workflows" / "api"  # API twins of the UI workflows in example_workflows/
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


def make_base_dir(base: Path, *, with_models: bool = True, tiny_models: Path | None = None) -> dict[str, Path]:
    """``comfyui_host.make_base_dir`` (folders, tiny checkpoints, this pack registered) plus what the
    tests' workflows load: the example image and a transparent one in ``input/``, the example mesh in
    ``input/3d/``, and empty placeholders for the core model files of the validate-only workflows."""
    paths = _host.make_base_dir(base, with_models=with_models, tiny_models=tiny_models)
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
    return paths


def ui_file_of_twin(api_name: str) -> Path | None:
    """The UI workflow in example_workflows/ whose API twin is ``api_name`` (``extra.partgen.api_twin``)."""
    from partgen_tools.workflow_format import api_twin_path, ui_workflow_files

    for ui_file in ui_workflow_files(API_WORKFLOWS.parent):
        if api_twin_path(ui_file).name == api_name:
            return ui_file
    return None


def twin_required_host(api_name: str) -> str | None:
    """The ``min_comfyui`` of the UI workflow behind an API twin."""
    ui_file = ui_file_of_twin(api_name)
    if ui_file is None:
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
    """The shipped ``example_workflows/api/*_api.json`` (API format) that tests execute, keyed by file name;
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
    sys.path[:] = [str(root)] + [p for p in sys.path if p not in ("", here, str(root), str(REPO_ROOT))]
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

class ComfyUIServer(_host.ComfyUIServer):
    """``comfyui_host.ComfyUIServer`` plus a websocket client that queues a prompt and records it."""

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
