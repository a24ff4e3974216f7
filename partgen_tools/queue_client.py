"""Queue an API-format workflow on a running ComfyUI server and download what it produces.

    python -m partgen_tools.queue_client example_workflows/api/image_to_object_mesh_api.json \\
        --server http://127.0.0.1:8188 --image chair.png --set 3.seed=5 --set 3.steps=10 --out results/

``--image`` is uploaded to the server's input folder and every LoadImage node is pointed at it;
``--set NODE.INPUT=VALUE`` overrides a widget (NODE: the node id, its title or a class name used by
one node; VALUE: JSON, else taken as text). Progress goes to stderr, the downloaded files' paths to
stdout. Files are never overwritten: a name already taken in ``--out`` gets ``_1``, ``_2``...

A lost connection (the server restarting) is retried ``--retries`` times, 1 to 5 s apart; then
the prompt's fate is looked up, since ComfyUI forgets its queue when it restarts. Ctrl-C asks the
server to stop the prompt. Needs aiohttp (ComfyUI itself depends on it).

Exit status: 0 success, 1 the workflow failed (validation or a node's error), 2 bad arguments or
workflow file, 3 the server is unreachable or lost the prompt, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
IMAGE_LOADERS = ("LoadImage",)
MANIFEST_WRITERS = ("PartGenSaveParts",)  # their GLB has a manifest (and maybe part files) beside it
_SOCKET_TIMEOUT_S = 300.0  # per connect and per read; no total, a download or a run may take long
_HISTORY_POLLS = 50  # x 0.2 s: how long a finished prompt may take to appear in /history


class QueueClientError(Exception):
    """Ends the run with ``exit_code`` after printing the message."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# The workflow: loading, overrides, input images
# ---------------------------------------------------------------------------------------------

def load_workflow(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QueueClientError(f"workflow {path}: no such file", EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QueueClientError(f"workflow {path}: not readable JSON ({exc})", EXIT_USAGE) from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise QueueClientError(
            f"workflow {path} is in ComfyUI's UI format; queue its API-format twin (*_api.json, or "
            "'Export (API)' in ComfyUI)", EXIT_USAGE)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a saved POST /prompt body
    if not isinstance(data, dict) or not data or not all(
            isinstance(node, dict) and "class_type" in node for node in data.values()):
        raise QueueClientError(
            f"workflow {path} is not an API-format workflow ({{node id: {{class_type, inputs}}}})", EXIT_USAGE)
    return data


@dataclass(frozen=True)
class Override:
    node: str
    input: str
    value: Any


def parse_override(text: str) -> Override:
    target, sep, raw = text.partition("=")
    node, dot, name = target.strip().rpartition(".")
    if not sep or not dot or not node or not name:
        raise QueueClientError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. 3.seed=5", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # plain text: file names, prompts
    return Override(node, name.strip(), value)


def find_node(prompt: dict[str, dict], selector: str) -> str:
    """A node id, else the node whose title is ``selector``, else the one node of that class."""
    if selector in prompt:
        return selector
    for key in ("title", "class_type"):
        matches = [nid for nid, node in prompt.items()
                   if (node.get("_meta", {}).get("title") if key == "title" else node.get("class_type")) == selector]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise QueueClientError(f"--set: {len(matches)} nodes match {selector!r} ({', '.join(matches)}); use a node id",
                                   EXIT_USAGE)
    raise QueueClientError(f"--set: the workflow has no node {selector!r} (ids: {', '.join(prompt)})", EXIT_USAGE)


def apply_overrides(prompt: dict[str, dict], overrides: list[Override]) -> None:
    for override in overrides:
        nid = find_node(prompt, override.node)
        inputs = prompt[nid].setdefault("inputs", {})
        if override.input not in inputs:
            raise QueueClientError(
                f"--set: node {nid} ({prompt[nid]['class_type']}) has no input {override.input!r}; "
                f"it has {', '.join(inputs) or 'none'}", EXIT_USAGE)
        if _is_link(inputs[override.input]):
            raise QueueClientError(
                f"--set: node {nid} ({prompt[nid]['class_type']}) input {override.input!r} is wired to node "
                f"{inputs[override.input][0]}, not a widget", EXIT_USAGE)
        inputs[override.input] = override.value


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def image_loader_nodes(prompt: dict[str, dict]) -> list[str]:
    return [nid for nid, node in prompt.items() if node.get("class_type") in IMAGE_LOADERS]


# ---------------------------------------------------------------------------------------------
# Readable errors
# ---------------------------------------------------------------------------------------------

def node_error_lines(node_errors: dict, prompt: dict[str, dict]) -> list[str]:
    """``node_errors`` of POST /prompt → "node 3 (PartGenMultiView) input 'steps': message (details)"."""
    lines = []
    for nid, entry in node_errors.items():
        class_type = entry.get("class_type") or prompt.get(nid, {}).get("class_type", "?")
        for err in entry.get("errors", []):
            name = (err.get("extra_info") or {}).get("input_name")
            details = err.get("details")
            where = f"node {nid} ({class_type})" + (f" input {name!r}" if name else "")
            lines.append(f"{where}: {err.get('message', '')}" + (f" ({details})" if details else ""))
    return lines


def format_validation_error(body: Any, prompt: dict[str, dict]) -> str:
    """POST /prompt's 400 body → one line per failing input."""
    if not isinstance(body, dict):
        return f"ComfyUI refused the workflow: {body}"
    error = body.get("error") or {}
    message = error.get("message", "invalid prompt") if isinstance(error, dict) else str(error)
    lines = [f"ComfyUI refused the workflow: {message}"]
    node_errors = body.get("node_errors") or {}
    lines += [f"  {line}" for line in node_error_lines(node_errors, prompt)]
    if not node_errors and isinstance(error, dict) and error.get("details"):
        lines.append(f"  {error['details']}")
    return "\n".join(lines)


def format_execution_error(data: dict) -> str:
    exception = str(data.get("exception_type", "")).rsplit(".", 1)[-1]
    message = str(data.get("exception_message", "")).strip()
    return f"node {data.get('node_id')} ({data.get('node_type')}) failed: " + (f"{exception}: " if exception else "") + message


# ---------------------------------------------------------------------------------------------
# Talking to the server
# ---------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str  # "success" | "error" | "interrupted"
    data: dict = field(default_factory=dict)


@dataclass
class RunState:
    """What the Ctrl-C handler needs after the event loop is gone."""

    server: str
    prompt_id: Optional[str] = None


class ComfyClient:
    def __init__(self, server: str, *, retries: int = 10, show_progress: bool = True) -> None:
        self.server = server.rstrip("/")
        self.retries = retries
        self.show_progress = show_progress
        self.client_id = uuid.uuid4().hex
        self.session = None

    async def __aenter__(self) -> "ComfyClient":
        import aiohttp

        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=_SOCKET_TIMEOUT_S, sock_read=_SOCKET_TIMEOUT_S))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    def _unreachable(self, exc: BaseException) -> QueueClientError:
        return QueueClientError(
            f"cannot reach ComfyUI at {self.server} ({exc.__class__.__name__}: {exc}); is it running? "
            "Start it with `python main.py --listen 127.0.0.1 --port 8188` or pass --server", EXIT_SERVER)

    async def _request(self, method: str, path: str, **kwargs):
        import aiohttp

        try:
            async with self.session.request(method, self.server + path, **kwargs) as response:
                body = await response.read()
                return response.status, body
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            raise self._unreachable(exc) from None

    async def get_json(self, path: str) -> Any:
        status, body = await self._request("GET", path)
        if status != 200:
            raise QueueClientError(f"GET {path} answered HTTP {status}: {body[:300].decode(errors='replace')}")
        return json.loads(body)

    async def upload_image(self, path: Path) -> str:
        """POST /upload/image; the value a LoadImage node takes ("subfolder/name")."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("image", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
        form.add_field("type", "input")
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200:
            raise QueueClientError(f"uploading {path.name} failed: HTTP {status} {body[:300].decode(errors='replace')}")
        answer = json.loads(body)
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    async def queue_prompt(self, prompt: dict) -> str:
        status, body = await self._request("POST", "/prompt", json={"prompt": prompt, "client_id": self.client_id})
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body.decode(errors="replace")
        if status == 400:
            raise QueueClientError(format_validation_error(answer, prompt), EXIT_FAILED)
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise QueueClientError(f"POST /prompt answered HTTP {status}: {str(answer)[:500]}")
        for line in node_error_lines(answer.get("node_errors") or {}, prompt):  # those outputs are dropped
            logger.warning("warning: %s; that output is skipped", line)
        return answer["prompt_id"]

    async def follow(self, prompt_id: str, prompt: dict, ws) -> Outcome:
        """Read the websocket until the prompt ends; reconnect when the connection drops."""
        progress = _Progress(prompt, enabled=self.show_progress)
        attempt = 0
        try:
            while True:
                if ws is None:
                    try:
                        ws = await self.open_websocket()
                    except QueueClientError as unreachable:
                        attempt = await self._wait_before_retry(attempt, prompt_id, unreachable.__cause__)
                        continue
                    progress.note(f"reconnected to {self.server}")
                    settled = await self._after_reconnect(prompt_id)
                    if settled is not None:
                        return settled
                    attempt = 0
                outcome = await self._read_events(ws, prompt_id, progress)
                await ws.close()
                ws = None
                if outcome is not None:
                    return outcome
                attempt = await self._wait_before_retry(attempt, prompt_id, ConnectionError("websocket closed"))
        finally:
            progress.close()
            if ws is not None:
                await ws.close()

    def _ws_url(self) -> str:
        parts = urllib.parse.urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws",
                                        f"clientId={self.client_id}", ""))

    async def open_websocket(self):
        import aiohttp

        try:  # the heartbeat notices a connection that died without closing
            return await self.session.ws_connect(self._ws_url(), heartbeat=20.0, max_msg_size=0)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def _wait_before_retry(self, attempt: int, prompt_id: str, exc: BaseException) -> int:
        attempt += 1
        if attempt > self.retries:
            raise QueueClientError(
                f"lost the connection to ComfyUI at {self.server} and could not reconnect after {self.retries} tries "
                f"({exc}); prompt {prompt_id} may still be running there: see {self.server}/history/{prompt_id}",
                EXIT_SERVER)
        delay = float(min(attempt, 5))  # 1, 2, 3, 4, 5, 5... s: a restarting ComfyUI is back within tens of seconds
        logger.warning("connection to ComfyUI lost (%s); reconnecting in %.0f s (try %d of %d)", exc, delay, attempt, self.retries)
        await asyncio.sleep(delay)
        return attempt

    async def _after_reconnect(self, prompt_id: str) -> Optional[Outcome]:
        """Events sent while we were away are gone: ask the history, then the queue."""
        history = await self.get_json(f"/history/{prompt_id}")
        if prompt_id in history:
            return outcome_from_history(history[prompt_id])
        queue = await self.get_json("/queue")
        queued = [item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])]
        if prompt_id in queued:
            return None
        raise QueueClientError(
            f"ComfyUI at {self.server} restarted and no longer knows prompt {prompt_id} (it keeps its queue in "
            "memory); queue the workflow again", EXIT_SERVER)

    async def _read_events(self, ws, prompt_id: str, progress: "_Progress") -> Optional[Outcome]:
        """None when the connection closed before the prompt ended."""
        import aiohttp

        outcome: Optional[Outcome] = None
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                continue  # preview images
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "executing":
                if data.get("node") is None and data.get("prompt_id") == prompt_id:
                    # closes a prompt on every path, after its final status
                    return outcome or await self._outcome_from_server(prompt_id)
                progress.executing(str(data["node"]))
            elif kind == "execution_cached":
                progress.cached(len(data.get("nodes") or []))
            elif kind == "progress":
                progress.step(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
            elif kind == "execution_success":
                outcome = Outcome("success", data)
            elif kind == "execution_error":
                outcome = Outcome("error", data)
            elif kind == "execution_interrupted":
                outcome = Outcome("interrupted", data)
        return None

    async def _outcome_from_server(self, prompt_id: str) -> Outcome:
        for _ in range(_HISTORY_POLLS):  # the history entry is written right after the final event
            history = await self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                return outcome_from_history(history[prompt_id])
            await asyncio.sleep(0.2)
        raise QueueClientError(f"prompt {prompt_id} ended but ComfyUI has no history for it")

    async def download_outputs(self, prompt_id: str, prompt: dict, out_dir: Path) -> list[Path]:
        history = (await self.get_json(f"/history/{prompt_id}")).get(prompt_id, {})
        saved = []
        for nid, node_output in (history.get("outputs") or {}).items():
            for entry in output_files(node_output):
                path = await self.download(entry, out_dir)
                saved.append(path)
                if prompt.get(nid, {}).get("class_type") in MANIFEST_WRITERS and entry["filename"].endswith(".glb"):
                    saved += await self._download_manifest_and_parts(entry, out_dir)
        return saved

    async def _download_manifest_and_parts(self, scene: dict, out_dir: Path) -> list[Path]:
        manifest = dict(scene, filename=scene["filename"][: -len(".glb")] + ".json")
        status, body = await self._request("GET", "/view?" + urllib.parse.urlencode(_view_query(manifest)))
        if status != 200:
            return []
        saved = [save_file(body, manifest, out_dir)]
        try:
            part_files = [p["file"] for p in json.loads(body).get("parts", []) if p.get("file")]
        except (ValueError, AttributeError):
            return saved
        for name in part_files:
            saved.append(await self.download(dict(scene, filename=name), out_dir))
        return saved

    async def download(self, entry: dict, out_dir: Path) -> Path:
        status, body = await self._request("GET", "/view?" + urllib.parse.urlencode(_view_query(entry)))
        if status != 200:
            raise QueueClientError(f"downloading {entry.get('subfolder', '')}/{entry['filename']} failed: HTTP {status}")
        return save_file(body, entry, out_dir)


def outcome_from_history(entry: dict) -> Outcome:
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    for kind, data in messages:
        if kind == "execution_error":
            return Outcome("error", data)
        if kind == "execution_interrupted":
            return Outcome("interrupted", data)
    return Outcome("success" if status.get("status_str", "success") == "success" else "error", {})


def output_files(node_output: dict) -> list[dict]:
    """The files a node's ``ui`` output lists (images, 3d, ...) that live in the output folder."""
    return [entry for entries in node_output.values() if isinstance(entries, list) for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("filename"), str)
            and entry.get("type", "output") == "output"]


def _view_query(entry: dict) -> dict:
    return {"filename": entry["filename"], "subfolder": entry.get("subfolder", ""), "type": entry.get("type", "output")}


def save_file(data: bytes, entry: dict, out_dir: Path) -> Path:
    """``out_dir/subfolder/filename``, atomically, never over an existing file, never outside ``out_dir``."""
    relative = PurePosixPath(str(entry.get("subfolder") or "").replace("\\", "/")) / entry["filename"].replace("\\", "/")
    if relative.is_absolute() or ".." in relative.parts:
        raise QueueClientError(f"the server reported an unsafe output path {relative}; not saved")
    target = Path(out_dir, *relative.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".partgen-{uuid.uuid4().hex}.tmp"
    # os.open with 0o666 honours the umask (mkstemp would leave the file readable by its owner only)
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as stream:
            stream.write(data)  # a full disk or an interrupt here must not leave the temporary behind
        for counter in itertools.count():
            candidate = target if counter == 0 else target.with_name(f"{target.stem}_{counter}{target.suffix}")
            try:
                os.link(temporary, candidate)  # refuses to replace an existing file
                return candidate
            except FileExistsError:
                continue
    finally:
        temporary.unlink(missing_ok=True)


class _Progress:
    """One tqdm bar on stderr: the node that runs and its steps."""

    def __init__(self, prompt: dict, enabled: bool) -> None:
        from tqdm import tqdm

        self.prompt = prompt
        self.total_nodes = len(prompt)
        self.done = 0
        self.bar = tqdm(total=0, file=sys.stderr, disable=not enabled, dynamic_ncols=True, leave=False,
                        bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]")

    def note(self, text: str) -> None:
        if self.bar.disable:
            logger.info("%s", text)
        else:
            self.bar.write(text, file=sys.stderr)

    def cached(self, count: int) -> None:
        self.done += count

    def executing(self, node: str) -> None:
        self.done += 1
        class_type = self.prompt.get(node, {}).get("class_type", "?")
        self.bar.set_description_str(f"[{min(self.done, self.total_nodes)}/{self.total_nodes}] node {node} {class_type}")
        self.bar.reset(total=0)

    def step(self, node: str, value: int, maximum: int) -> None:
        if self.bar.total != maximum:
            self.bar.reset(total=maximum)
        self.bar.n = value
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m partgen_tools.queue_client", description=__doc__.splitlines()[0],
        epilog="exit status: 0 success, 1 workflow failed, 2 bad arguments, 3 server unreachable or prompt lost, "
               "130 interrupted")
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (e.g. example_workflows/api/*_api.json)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address (default %(default)s)")
    parser.add_argument("--image", type=Path, help="upload this image and load it in every LoadImage node")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override a node's widget, e.g. 3.seed=5 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where produced files are saved (default: .)")
    parser.add_argument("--retries", type=int, default=10,
                        help="reconnection tries when the server goes away, 1-5 s apart (default 10, about 40 s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


async def run(args: argparse.Namespace, state: RunState) -> int:
    prompt = load_workflow(args.workflow)
    apply_overrides(prompt, [parse_override(text) for text in args.overrides])
    if args.image is not None:
        if not args.image.is_file():
            raise QueueClientError(f"--image {args.image}: no such file", EXIT_USAGE)
        if not image_loader_nodes(prompt):
            raise QueueClientError(f"--image: workflow {args.workflow.name} has no LoadImage node", EXIT_USAGE)
    started = time.monotonic()
    async with ComfyClient(args.server, retries=args.retries, show_progress=not args.quiet) as client:
        await client.get_json("/queue")  # fails fast and clearly when the server is down
        if args.image is not None:
            name = await client.upload_image(args.image)
            for nid in image_loader_nodes(prompt):
                prompt[nid]["inputs"]["image"] = name
            # the overrides were checked before anything was sent; applied again, a --set on a LoadImage wins
            apply_overrides(prompt, [parse_override(text) for text in args.overrides])
        ws = await client.open_websocket()  # before queueing, so no event is missed
        prompt_id = await client.queue_prompt(prompt)
        state.prompt_id = prompt_id
        logger.info("queued prompt %s on %s", prompt_id, client.server)
        outcome = await client.follow(prompt_id, prompt, ws)
        if outcome.status == "interrupted":
            data = outcome.data
            where = f" at node {data.get('node_id')} ({data.get('node_type')})" if data.get("node_id") else ""
            raise QueueClientError(f"interrupted{where}: prompt {prompt_id} was stopped on the server", EXIT_INTERRUPTED)
        if outcome.status == "error":
            raise QueueClientError(format_execution_error(outcome.data) if outcome.data else
                                   f"prompt {prompt_id} failed (see {client.server}/history/{prompt_id})")
        saved = await client.download_outputs(prompt_id, prompt, args.out)
    for path in saved:
        print(path)
    logger.info("done in %.1f s: %d file(s) in %s", time.monotonic() - started, len(saved), args.out)
    return EXIT_OK


def _interrupt_on_server(state: RunState) -> str:
    """After Ctrl-C: stop our prompt if it runs, drop it if it waits."""
    if state.prompt_id is None:
        return "interrupted before anything was queued"
    base = state.server.rstrip("/")
    try:
        for path, payload in (("/interrupt", {"prompt_id": state.prompt_id}), ("/queue", {"delete": [state.prompt_id]})):
            request = urllib.request.Request(base + path, data=json.dumps(payload).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()
    except (urllib.error.URLError, OSError) as exc:
        return f"interrupted; could not tell ComfyUI to stop prompt {state.prompt_id} ({exc})"
    return f"interrupted; asked ComfyUI to stop prompt {state.prompt_id}"


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print("the queue client needs aiohttp: pip install aiohttp", file=sys.stderr)
        return EXIT_USAGE
    state = RunState(server=args.server)
    try:
        return asyncio.run(run(args, state))
    except QueueClientError as error:
        print(f"error: {error}" if error.exit_code != EXIT_INTERRUPTED else str(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(_interrupt_on_server(state), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
