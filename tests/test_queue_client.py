"""The queue client (``python -m partgen_tools.queue_client``).

Tier 1: arguments, workflow files, overrides and saved files, without a server. Tier 3: the client
as a user runs it, in a subprocess, against a real ComfyUI 0.3.75 server on a loopback port started
for this module (tiny checkpoints): upload, overrides, progress, downloads, validation and node
errors, interrupts from either side, a server that restarts or does not come back. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trimesh

import comfyui_harness as harness
from partgen_tools import queue_client as qc

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO_ROOT / "example_workflows" / "api"
MESH_WORKFLOW = WORKFLOWS / "image_to_object_mesh_api.json"
VIEWS_WORKFLOW = WORKFLOWS / "image_to_views_api.json"
LONG_RUN = ["--set", "3.steps=300", "--set", "3.view_size=64"]  # sampling long enough to be stopped


# --------------------------------------------------------------------------------------------
# Tier 1: no server
# --------------------------------------------------------------------------------------------

def _main(capsys, *args: str) -> tuple[int, str]:
    code = qc.main(list(args))
    return code, capsys.readouterr().err


def _api_workflow(tmp_path: Path, prompt: dict) -> Path:
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(prompt))
    return path


SMALL = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "Load object image"}},
    "3": {"class_type": "PartGenMultiView", "inputs": {"image": ["1", 0], "steps": 28, "seed": 42}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "x"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "y"}},
}


@pytest.mark.parametrize("content, message", [
    (None, "error: workflow {path}: no such file"),
    ("{not json", "error: workflow {path}: not readable JSON"),
    (json.dumps({"nodes": [], "links": [], "version": 0.4}),
     "error: workflow {path} is in ComfyUI's UI format; queue its API-format twin (*_api.json, or 'Export (API)' in ComfyUI)"),
    (json.dumps({"1": {"inputs": {}}}), "error: workflow {path} is not an API-format workflow"),
])
def test_workflow_file_errors(tmp_path, capsys, content, message):
    path = tmp_path / "wf.json"
    if content is not None:
        path.write_text(content)
    code, err = _main(capsys, str(path))
    assert code == qc.EXIT_USAGE and err.startswith(message.format(path=path)), err


def test_a_saved_prompt_body_is_accepted(tmp_path):
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"prompt": SMALL, "client_id": "x"}))
    assert qc.load_workflow(path) == SMALL


@pytest.mark.parametrize("override, message", [
    ("3.seed", "error: --set '3.seed': expected NODE.INPUT=VALUE, e.g. 3.seed=5"),
    ("seed=5", "error: --set 'seed=5': expected NODE.INPUT=VALUE, e.g. 3.seed=5"),
    ("9.seed=5", "error: --set: the workflow has no node '9' (ids: 1, 3, 4, 5)"),
    ("SaveImage.filename_prefix=z", "error: --set: 2 nodes match 'SaveImage' (4, 5); use a node id"),
    ("3.sead=5", "error: --set: node 3 (PartGenMultiView) has no input 'sead'; it has image, steps, seed"),
    ("3.image=b.png", "error: --set: node 3 (PartGenMultiView) input 'image' is wired to node 1, not a widget"),
])
def test_override_errors(tmp_path, capsys, override, message):
    code, err = _main(capsys, str(_api_workflow(tmp_path, SMALL)), "--set", override)
    assert code == qc.EXIT_USAGE and err.strip() == message, err


def test_overrides_parse_json_and_find_nodes_by_title_or_class():
    prompt = json.loads(json.dumps(SMALL))
    qc.apply_overrides(prompt, [qc.parse_override(t) for t in
                                ("3.seed=5", "PartGenMultiView.steps=10", "Load object image.image=chair (1).png",
                                 "4.filename_prefix=out/a=b")])
    assert prompt["3"]["inputs"]["seed"] == 5 and prompt["3"]["inputs"]["steps"] == 10
    assert prompt["1"]["inputs"]["image"] == "chair (1).png" and prompt["4"]["inputs"]["filename_prefix"] == "out/a=b"


def test_image_argument_errors(tmp_path, capsys):
    code, err = _main(capsys, str(_api_workflow(tmp_path, SMALL)), "--image", str(tmp_path / "none.png"))
    assert code == qc.EXIT_USAGE and err.strip() == f"error: --image {tmp_path / 'none.png'}: no such file"
    image = harness.write_placeholder_image(tmp_path / "chair.png", 32)
    no_loader = {k: v for k, v in SMALL.items() if k != "1"}
    code, err = _main(capsys, str(_api_workflow(tmp_path, no_loader)), "--image", str(image))
    assert code == qc.EXIT_USAGE and err.strip() == "error: --image: workflow workflow_api.json has no LoadImage node"


def test_server_down_is_reported_with_its_address(tmp_path, capsys):
    url = f"http://127.0.0.1:{harness.free_port()}"
    code, err = _main(capsys, str(_api_workflow(tmp_path, SMALL)), "--server", url, "--quiet")
    assert code == qc.EXIT_SERVER, err
    assert err.startswith(f"error: cannot reach ComfyUI at {url} (") and "is it running?" in err, err


def test_missing_aiohttp_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    code, err = _main(capsys, str(_api_workflow(tmp_path, SMALL)))
    assert code == qc.EXIT_USAGE and err.strip() == "the queue client needs aiohttp: pip install aiohttp"


def test_validation_errors_read_as_one_line_per_input():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"3": {"errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                                              "details": "steps", "extra_info": {"input_name": "steps"}}],
                                  "dependent_outputs": ["4"], "class_type": "PartGenMultiView"}}}
    assert qc.format_validation_error(body, SMALL) == (
        "ComfyUI refused the workflow: Prompt outputs failed validation\n"
        "  node 3 (PartGenMultiView) input 'steps': Value 0 smaller than min of 1 (steps)")
    no_outputs = {"error": {"message": "Prompt has no outputs", "details": "add an output node"}, "node_errors": {}}
    assert qc.format_validation_error(no_outputs, SMALL) == \
        "ComfyUI refused the workflow: Prompt has no outputs\n  add an output node"
    error = {"node_id": "3", "node_type": "PartGenMultiView", "exception_type": "partgen_models.x.InputImageError",
             "exception_message": "the image has no object\n"}
    assert qc.format_execution_error(error) == "node 3 (PartGenMultiView) failed: InputImageError: the image has no object"


def test_saved_files_never_overwrite_or_leave_the_folder(tmp_path):
    entry = {"filename": "a.glb", "subfolder": "partgen", "type": "output"}
    first = qc.save_file(b"one", entry, tmp_path)
    second = qc.save_file(b"two", entry, tmp_path)
    assert (first.name, second.name) == ("a.glb", "a_1.glb") and first.read_bytes() == b"one"
    assert not [p for p in (tmp_path / "partgen").iterdir() if p.name.startswith(".")]  # no temporaries left
    umask = os.umask(0o022)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask
    for bad in ({"filename": "x.glb", "subfolder": "../up"}, {"filename": "/etc/x.glb", "subfolder": ""}):
        with pytest.raises(qc.QueueClientError, match="the server reported an unsafe output path"):
            qc.save_file(b"x", bad, tmp_path)


def test_outcome_from_history_finds_errors_and_interrupts():
    def entry(status, *messages):
        return {"status": {"status_str": status, "messages": list(messages)}}

    assert qc.outcome_from_history(entry("success", ["execution_success", {}])).status == "success"
    error = qc.outcome_from_history(entry("error", ["execution_error", {"node_id": "3"}]))
    assert (error.status, error.data) == ("error", {"node_id": "3"})
    assert qc.outcome_from_history(entry("error", ["execution_interrupted", {}])).status == "interrupted"


def test_ctrl_c_messages():
    assert qc._interrupt_on_server(qc.RunState("http://127.0.0.1:1")) == "interrupted before anything was queued"
    url = f"http://127.0.0.1:{harness.free_port()}"
    message = qc._interrupt_on_server(qc.RunState(url, prompt_id="abc"))
    assert message.startswith("interrupted; could not tell ComfyUI to stop prompt abc ("), message


class FakeComfyUI:
    """Just enough of ComfyUI's HTTP and websocket API to make it answer what a real one rarely does."""

    def __init__(self, **behaviour) -> None:
        import asyncio

        self.behaviour = behaviour
        self.loop = asyncio.new_event_loop()
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prompt_id = "fake-prompt"
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "FakeComfyUI":
        self._thread.start()
        assert self._started.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.queued = asyncio.Event()
        app = web.Application()
        app.router.add_get("/queue", self._queue)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_get("/view", self._view)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self._started.set()
        self.loop.run_forever()

    def _answer(self, name: str, default):
        from aiohttp import web

        status, body = self.behaviour.get(name, (200, default))
        return web.json_response(body, status=status) if not isinstance(body, str) else web.Response(text=body, status=status)

    async def _queue(self, request):
        return self._answer("queue", {"queue_running": [], "queue_pending": []})

    async def _upload(self, request):
        await request.post()
        return self._answer("upload", {"name": "a.png", "subfolder": "", "type": "input"})

    async def _prompt(self, request):
        self.queued.set()
        return self._answer("prompt", {"prompt_id": self.prompt_id, "number": 1, "node_errors": {}})

    async def _ws(self, request):
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self.queued.wait()
        for event in self.behaviour.get("events", []) + [{"type": "executing", "data": {"node": None, "prompt_id": self.prompt_id}}]:
            await ws.send_json(event)
        await ws.receive()  # until the client closes
        return ws

    async def _history(self, request):
        return self._answer("history", {})

    async def _view(self, request):
        return self._answer("view", "file body")


_SUCCESS = [{"type": "execution_success", "data": {"prompt_id": "fake-prompt"}}]


@pytest.mark.parametrize("behaviour, code, message", [
    (dict(queue=(500, "boom")), qc.EXIT_FAILED, "error: GET /queue answered HTTP 500: boom"),
    (dict(upload=(500, "disk full")), qc.EXIT_FAILED, "error: uploading chair.png failed: HTTP 500 disk full"),
    (dict(prompt=(500, "boom")), qc.EXIT_FAILED, "error: POST /prompt answered HTTP 500: boom"),
    (dict(events=[]), qc.EXIT_FAILED, "error: prompt fake-prompt ended but ComfyUI has no history for it"),
    (dict(events=[], history=(200, {"fake-prompt": {"status": {"status_str": "error", "messages": []}}})),
     qc.EXIT_FAILED, "error: prompt fake-prompt failed (see {url}/history/fake-prompt)"),
    (dict(events=_SUCCESS, view=(404, "gone"),
          history=(200, {"fake-prompt": {"outputs": {"4": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}}})),
     qc.EXIT_FAILED, "error: downloading /a.png failed: HTTP 404"),
    (dict(events=_SUCCESS, prompt=(200, {"prompt_id": "fake-prompt", "number": 1, "node_errors": {
        "5": {"errors": [{"message": "Required input is missing", "details": "images",
                          "extra_info": {"input_name": "images"}}], "class_type": "SaveImage"}}}),
          history=(200, {"fake-prompt": {"outputs": {}}})),
     qc.EXIT_OK, "warning: node 5 (SaveImage) input 'images': Required input is missing (images); "
                 "that output is skipped"),
])
def test_unusual_server_answers_are_reported(tmp_path, capsys, caplog, monkeypatch, behaviour, code, message):
    monkeypatch.setattr(qc, "_HISTORY_POLLS", 2)
    image = harness.write_placeholder_image(tmp_path / "chair.png", 32)
    with FakeComfyUI(**behaviour) as fake:
        got, err = _main(capsys, str(_api_workflow(tmp_path, SMALL)), "--server", fake.url, "--image", str(image),
                         "--out", str(tmp_path / "out"), "--quiet")
    assert got == code, err
    assert message.format(url=fake.url) in err + caplog.text, err + caplog.text


# --------------------------------------------------------------------------------------------
# Tier 3: a real server
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comfy_server(comfyui_path, comfyui_base):
    srv = harness.ComfyUIServer(comfyui_path, comfyui_base).start(timeout_s=180)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(comfy_server):
    """The module's server, started again on its port if an earlier test stopped it."""
    if comfy_server.proc is None or comfy_server.proc.poll() is not None:
        comfy_server.stop()
        comfy_server.start(timeout_s=180)
    return comfy_server


def _client(*args: str) -> list[str]:
    return [sys.executable, "-m", "partgen_tools.queue_client", *map(str, args)]


def run_client(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_client(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


class BackgroundClient:
    """The client in a subprocess, its stderr collected as it comes."""

    def __init__(self, *args: str) -> None:
        # A suite started as a background job (`cmd &` in a script) inherits SIGINT ignored, and so would the
        # client, which then could not be stopped like a user's Ctrl+C: give it the default disposition.
        restore_ctrl_c = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if os.name == "posix" else None
        self.proc = subprocess.Popen(_client(*args), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, preexec_fn=restore_ctrl_c)
        self.err: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(iter(self.proc.stderr.readline, "")), daemon=True)
        self._reader.start()

    def prompt_id(self, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.err):
                if line.startswith("queued prompt "):
                    return line.split()[2]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the client queued nothing: {''.join(self.err)}")

    def finish(self, timeout_s: float = 120) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the client did not end within {timeout_s}s: {''.join(self.err)}") from None
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        return self.proc.returncode, "".join(self.err)


def _wait_until_running(server: harness.ComfyUIServer, prompt_id: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [item[1] for item in server.get_json("/queue")["queue_running"]]
        if prompt_id in running:
            return
        time.sleep(0.2)
    raise AssertionError(f"prompt {prompt_id} never started; server log:\n{server.log_tail()}")


def _wait_for_history(server: harness.ComfyUIServer, prompt_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        history = server.get_json(f"/history/{prompt_id}")
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.3)
    raise AssertionError(f"prompt {prompt_id} never finished; server log:\n{server.log_tail()}")


@pytest.mark.tier3
def test_queue_upload_override_progress_and_download(server, tmp_path):
    from test_gltf_validator import require_valid_gltf

    image = harness.write_placeholder_image(tmp_path / "queue_client_chair.png", 128)
    out = tmp_path / "results"
    done = run_client(MESH_WORKFLOW, "--server", server.url, "--image", image, "--out", out,
                      "--set", "3.seed=5", "--set", "3.steps=2", "--set", "3.view_size=64",
                      "--set", "5.resolution=32", "--set", "6.part_files=glb", "--set", "6.filename_prefix=queued/chair")
    assert done.returncode == 0, done.stderr + server.log_tail()
    saved = [Path(line) for line in done.stdout.split()]
    names = sorted(p.relative_to(out).as_posix() for p in saved)
    assert names == ["partgen/grid_00001_.png", "queued/chair_00001.glb", "queued/chair_00001.json",
                     "queued/chair_00001_object.glb"], names
    assert all(p.is_file() and p.stat().st_size > 0 for p in saved)
    assert "node 3 PartGenMultiView" in done.stderr and "2/2" in done.stderr  # the progress bar
    assert (server.paths["input"] / image.name).is_file()  # uploaded

    prompt_id = done.stderr.split("queued prompt ", 1)[1].split()[0]
    queued = server.get_json(f"/history/{prompt_id}")[prompt_id]["prompt"][2]
    assert queued["1"]["inputs"]["image"] == image.name and queued["3"]["inputs"]["seed"] == 5

    glbs = [p for p in saved if p.suffix == ".glb"]
    require_valid_gltf(glbs)
    manifest = json.loads((out / "queued/chair_00001.json").read_text())
    scene = trimesh.load(out / "queued/chair_00001.glb", force="scene", process=False)
    assert sorted(scene.graph.nodes_geometry) == sorted(p["name"] for p in manifest["parts"])
    assert manifest["settings"]["prompt"]["3"]["inputs"]["seed"] == 5


@pytest.mark.tier3
def test_validation_errors_are_reported_per_input(server, tmp_path):
    done = run_client(VIEWS_WORKFLOW, "--server", server.url, "--set", "3.steps=0", "--out", tmp_path, timeout_s=60)
    assert done.returncode == qc.EXIT_FAILED, done.stderr
    assert done.stderr.startswith("error: ComfyUI refused the workflow: Prompt outputs failed validation\n"), done.stderr
    assert "  node 3 (PartGenMultiView) input 'steps': Value 0 smaller than min of 1" in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.tier3
def test_node_errors_name_the_node_and_the_problem(server, tmp_path):
    empty = harness.write_transparent_image(tmp_path / "queue_client_nothing.png")
    done = run_client(VIEWS_WORKFLOW, "--server", server.url, "--image", empty, "--set", "3.steps=2",
                      "--set", "3.view_size=64", "--out", tmp_path / "out", "--quiet", timeout_s=120)
    assert done.returncode == qc.EXIT_FAILED, done.stderr
    assert "error: node 3 (PartGenMultiView) failed: " in done.stderr, done.stderr
    assert "no object" in done.stderr.lower() and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.tier3
def test_interrupt_from_the_server_side(server, tmp_path):
    client = BackgroundClient(VIEWS_WORKFLOW, "--server", server.url, *LONG_RUN, "--out", tmp_path, "--quiet")
    prompt_id = client.prompt_id()
    _wait_until_running(server, prompt_id)
    status, _ = server.post_json("/interrupt", {"prompt_id": prompt_id})
    assert status == 200
    code, err = client.finish()
    assert code == qc.EXIT_INTERRUPTED, err
    # "running" starts with the loader (node 2) when an earlier test has not cached it: the stop lands in
    # whichever node runs, and the message names that one
    stopped_in = re.search(rf"interrupted at node (\d+) \((\w+)\): prompt {prompt_id} was stopped on the server", err)
    assert stopped_in and stopped_in.groups() in {("2", "PartGenLoadMultiViewModel"), ("3", "PartGenMultiView")}, err


@pytest.mark.tier3
def test_ctrl_c_stops_the_prompt_on_the_server(server, tmp_path):
    client = BackgroundClient(VIEWS_WORKFLOW, "--server", server.url, *LONG_RUN, "--out", tmp_path, "--quiet")
    prompt_id = client.prompt_id()
    _wait_until_running(server, prompt_id)
    client.proc.send_signal(signal.SIGINT)
    code, err = client.finish()
    assert code == qc.EXIT_INTERRUPTED, err
    assert err.rstrip().endswith(f"interrupted; asked ComfyUI to stop prompt {prompt_id}"), err
    messages = [kind for kind, _ in _wait_for_history(server, prompt_id)["status"]["messages"]]
    assert "execution_interrupted" in messages, messages


@pytest.mark.tier3
def test_server_restart_mid_run_is_reported(server, tmp_path):
    client = BackgroundClient(VIEWS_WORKFLOW, "--server", server.url, *LONG_RUN, "--out", tmp_path, "--quiet",
                              "--retries", "30")
    prompt_id = client.prompt_id()
    _wait_until_running(server, prompt_id)
    server.proc.kill()  # a crash: no goodbye on the websocket
    server.proc.wait(timeout=30)
    server.stop()
    server.start(timeout_s=180)  # same port
    code, err = client.finish(timeout_s=120)
    assert code == qc.EXIT_SERVER, err
    assert "reconnecting in 1 s (try 1 of 30)" in err and f"reconnected to {server.url}" in err, err
    assert (f"error: ComfyUI at {server.url} restarted and no longer knows prompt {prompt_id} (it keeps its queue "
            "in memory); queue the workflow again") in err, err


@pytest.mark.tier3
def test_a_server_that_stays_down_is_given_up_on(server, tmp_path):
    client = BackgroundClient(VIEWS_WORKFLOW, "--server", server.url, *LONG_RUN, "--out", tmp_path, "--quiet",
                              "--retries", "2")
    prompt_id = client.prompt_id()
    _wait_until_running(server, prompt_id)
    server.proc.kill()
    server.proc.wait(timeout=30)
    code, err = client.finish(timeout_s=60)
    assert code == qc.EXIT_SERVER, err
    assert (f"error: lost the connection to ComfyUI at {server.url} and could not reconnect after 2 tries") in err, err
    assert f"prompt {prompt_id} may still be running there" in err, err
