"""The planner over an operator-configured OpenAI-compatible endpoint (tier 1), against a local aiohttp
server on a loopback port that speaks the chat-completions protocol: configuration, the request it
receives, down / slow / HTTP error / malformed replies, and that the key never leaves the request."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading

import pytest
import torch
from aiohttp import web

from partgen_models.planning import PlanReplyError, PlanRequest, plan_parts
from partgen_models.planning.endpoint import (
    ENDPOINTS_ENV,
    EndpointConfig,
    EndpointConfigError,
    EndpointError,
    EndpointVLM,
    find_endpoint,
    load_endpoints,
    redact,
)
from partgen_models.planning.planner import ChatOptions, plan_preview
from partgen_models.runtime import Runtime

KEY = "sk-test-0123456789abcdefSECRET"
KEY_ENV = "PARTGEN_TEST_ENDPOINT_KEY"
IMAGE = torch.rand(1, 80, 120, 3, generator=torch.Generator().manual_seed(1))
REQUEST = PlanRequest.from_text("hat, head", "the head under the hat is bald")
GOOD = {"parts": [{"name": "hat", "prompt": "Keep only the hat.", "note": ""},
                  {"name": "head", "prompt": "Keep only the head; bald under the hat.", "note": "bald"}]}


def _completion(content) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class ChatServer:
    """An aiohttp chat-completions server on 127.0.0.1 in a background thread; ``mode`` picks its answer."""

    def __init__(self) -> None:
        self.mode = "good"
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.replies: list = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/moved/chat/completions", self._redirect)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _redirect(self, request):
        raise web.HTTPTemporaryRedirect("http://127.0.0.2:9/v1/chat/completions")

    async def _chat(self, request):
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.mode == "slow":
            await asyncio.sleep(3)
        if self.mode == "unauthorized":
            return web.json_response({"error": {"message": f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}."}},
                                     status=401)
        if self.mode == "server_error":
            return web.Response(status=500, text="boom")
        if self.mode == "not_openai":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if self.mode == "queue":
            return web.json_response(_completion(self.replies.pop(0)))
        return web.json_response(_completion(json.dumps(GOOD)))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server():
    chat_server = ChatServer()
    yield chat_server
    chat_server.close()


@pytest.fixture
def endpoint(server):
    server.mode, server.requests, server.headers = "good", [], []
    config = EndpointConfig("local", f"http://127.0.0.1:{server.port}/v1", "tiny-vlm", api_key_env=KEY_ENV, timeout_s=1)
    return EndpointVLM(config, environ={KEY_ENV: KEY})


# --- configuration --------------------------------------------------------------------------------

def test_endpoints_come_from_file_and_environment(tmp_path):
    config_file = tmp_path / "partgen_vlm_endpoints.json"
    config_file.write_text(json.dumps({"ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5vl:7b"},
                                       "openai": {"base_url": "https://api.openai.com/v1", "model": "a",
                                                  "api_key_env": "OPENAI_API_KEY"}}))
    environ = {ENDPOINTS_ENV: json.dumps({"endpoints": {"openai": {"base_url": "https://api.openai.com/v1", "model": "b",
                                                                   "api_key_env": "OPENAI_API_KEY", "timeout_s": 30}}})}
    found = load_endpoints(config_file, environ)
    assert sorted(found) == ["ollama", "openai"]
    assert found["openai"].model == "b" and found["openai"].timeout_s == 30  # the environment wins
    assert found["ollama"].api_key_env == "" and load_endpoints(tmp_path / "absent.json", {}) == {}


def test_unconfigured_endpoint_names_what_is_configured(tmp_path):
    environ = {ENDPOINTS_ENV: json.dumps({"ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "m"}})}
    with pytest.raises(EndpointConfigError, match="'evil' is not configured on this server \\(configured: 'ollama'\\)"):
        find_endpoint("evil", None, environ)


@pytest.mark.parametrize("entry,message", [
    ({"base_url": "ftp://host/v1", "model": "m"}, "base_url must be an http\\(s\\) URL"),
    ({"base_url": "http://user:pw@host/v1", "model": "m"}, "base_url must not hold credentials"),
    ({"base_url": "http://host/v1"}, "has no model"),
    ({"base_url": "http://host/v1", "model": " "}, "'model' is missing"),
    ({"model": "m"}, "has no base_url"),
    ({"base_url": "http://host/v1", "model": "m", "api_key": "sk-1"}, "keys never go in this file"),
    ({"base_url": "http://host/v1", "model": "m", "api_key_env": "sk-abc def"}, "must be the NAME of an environment variable"),
    ({"base_url": "http://host/v1", "model": "m", "timeout_s": float("inf")}, "timeout_s must be within 1..600"),
])
def test_bad_endpoint_entries_are_named(entry, message):
    with pytest.raises(EndpointConfigError, match=message):
        load_endpoints(None, {ENDPOINTS_ENV: json.dumps({"e": entry})})


def test_unreadable_config_names_its_source(tmp_path):
    broken = tmp_path / "partgen_vlm_endpoints.json"
    broken.write_text("{not json")
    with pytest.raises(EndpointConfigError, match="partgen_vlm_endpoints.json is not valid JSON"):
        load_endpoints(broken, {})
    with pytest.raises(EndpointConfigError, match=f"the environment variable {ENDPOINTS_ENV} must be a JSON object"):
        load_endpoints(None, {ENDPOINTS_ENV: "[1, 2]"})


# --- the request and the happy path ---------------------------------------------------------------

def test_plan_over_the_endpoint(server, endpoint):
    plan = plan_parts(endpoint, IMAGE, REQUEST, ChatOptions(seed=5, max_new_tokens=300, image_max_side=64))
    assert plan.names == ["hat", "head"] and plan.source == "vlm:local" and plan.image_size == (80, 120)
    (sent,) = server.requests
    assert sent["model"] == "tiny-vlm" and sent["temperature"] == 0.0 and sent["seed"] == 5 and sent["max_tokens"] == 300
    system, user = sent["messages"]
    assert system["role"] == "system" and "white background" in system["content"]
    image_part, text_part = user["content"]
    assert '"hat", "head"' in text_part["text"] and "bald" in text_part["text"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    from PIL import Image

    sent_image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent_image.size == (64, 43)  # longer side scaled to image_max_side, aspect kept
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "response_format" not in sent


def test_malformed_content_is_reasked_over_the_endpoint(server, endpoint):
    server.mode = "queue"
    server.replies = ["Here you go: hat and head!", "```json\n" + json.dumps(GOOD) + "\n```"]
    plan = plan_parts(endpoint, IMAGE, REQUEST)
    assert plan.names == ["hat", "head"]
    roles = [m["role"] for m in server.requests[1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "not JSON" in server.requests[1]["messages"][3]["content"]


def test_empty_content_twice_is_a_plan_error(server, endpoint):
    server.mode = "queue"
    server.replies = ["", None]
    with pytest.raises(PlanReplyError, match="'local' gave no usable part plan, also when asked again: the reply is empty"):
        plan_parts(endpoint, IMAGE, REQUEST)


# --- failures ------------------------------------------------------------------------------------

def _chat(vlm: EndpointVLM) -> str:
    return vlm.chat("system", [("user", "hat")], IMAGE, ChatOptions(image_max_side=64), Runtime())


def test_endpoint_that_is_down():
    from comfyui_harness import free_port

    config = EndpointConfig("down", f"http://127.0.0.1:{free_port()}/v1", "m")
    with pytest.raises(EndpointError, match="endpoint 'down' \\(http://127.0.0.1:\\d+\\) could not be reached .*server is running"):
        _chat(EndpointVLM(config, environ={}))


def test_slow_endpoint_times_out(server, endpoint):
    server.mode = "slow"
    with pytest.raises(EndpointError, match="did not answer within timeout_s = 1 s: the operator can raise timeout_s"):
        _chat(endpoint)


@pytest.mark.parametrize("mode,message", [
    ("server_error", "answered HTTP 500: see the server's log"),
    ("unauthorized", "answered HTTP 401 \\(Incorrect API key provided: \\[redacted\\]\\): check the key"),
    ("not_openai", "did not answer in the OpenAI chat-completions format .* starts '<html>hello</html>'"),
])
def test_endpoint_errors_are_explained(server, endpoint, mode, message):
    server.mode = mode
    with pytest.raises(EndpointError, match=message):
        _chat(endpoint)


def test_redirects_are_refused(server):
    config = EndpointConfig("moved", f"http://127.0.0.1:{server.port}/moved", "m")
    with pytest.raises(EndpointError, match="HTTP 307: it redirected, and redirects are refused"):
        _chat(EndpointVLM(config, environ={}))


def test_missing_key_variable_is_named_without_a_request(server, endpoint):
    vlm = EndpointVLM(endpoint.config, environ={})
    with pytest.raises(EndpointError, match=f"needs its key in the environment variable {KEY_ENV}, which is not set"):
        _chat(vlm)
    assert server.requests == []


def test_interrupt_while_waiting(server, endpoint):
    server.mode = "slow"

    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 2:
            raise Stop

    with pytest.raises(Stop):
        endpoint.chat("s", [("user", "hat")], IMAGE, ChatOptions(image_max_side=64), Runtime(check_interrupt=interrupt))


# --- the key never leaves the request -------------------------------------------------------------

def test_key_is_in_no_output_error_or_log(server, endpoint, caplog):
    caplog.set_level(logging.DEBUG)
    texts = []
    plan = plan_parts(endpoint, IMAGE, REQUEST)
    texts += [repr(plan), plan_preview(plan), repr(endpoint), repr(endpoint.config)]
    for mode in ("unauthorized", "server_error", "not_openai", "slow"):
        server.mode = mode
        with pytest.raises(EndpointError) as caught:
            _chat(endpoint)
        texts += [str(caught.value), repr(caught.value)]
    texts.append(caplog.text)
    for text in texts:
        assert KEY not in text and KEY[-4:] not in text and KEY[:8] not in text, text


def test_redact_removes_key_and_echoed_pieces():
    assert redact(f"key {KEY} used", KEY) == "key [redacted] used"
    assert KEY[-4:] not in redact(f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}.", KEY)
    assert redact("nothing to hide", "") == "nothing to hide"


def test_bad_endpoint_name_and_entry_are_named():
    with pytest.raises(EndpointConfigError, match="names are 1-64 letters"):
        load_endpoints(None, {ENDPOINTS_ENV: json.dumps({"bad/name": {"base_url": "http://h/v1", "model": "m"}})})
    with pytest.raises(EndpointConfigError, match="endpoint 'e' in .* must be an object with base_url and model"):
        load_endpoints(None, {ENDPOINTS_ENV: json.dumps({"e": "http://h/v1"})})


def test_oversized_reply_is_refused(server, endpoint, monkeypatch):
    import partgen_models.planning.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "MAX_REPLY_BYTES", 64)
    with pytest.raises(EndpointError, match="sent more than 64 bytes; that is not a chat reply"):
        _chat(endpoint)
