"""An OpenAI-compatible chat-completions endpoint as the MMPart planner (OpenAI, Ollama, LM Studio,
vLLM, llama.cpp server), configured by the server's operator only.

Why operator-only: the planner sends the user's image. If a workflow could carry a URL, a shared
workflow could send every image it is run on to an address of its author's choosing; if it could
carry a key, keys would leak with every shared file. So endpoints are named entries in

- the environment variable ``PARTGEN_VLM_ENDPOINTS`` (JSON), and/or
- the file ``partgen_vlm_endpoints.json`` at the top of ComfyUI's ``user/`` folder (not inside a
  per-user ``user/<name>/`` folder, which the browser can write through ComfyUI's userdata API),

each giving ``base_url``, ``model`` and the *name* of the environment variable that holds the key::

    {"local-ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5vl:7b"},
     "openai": {"base_url": "https://api.openai.com/v1", "model": "gpt-4.1-mini", "api_key_env": "OPENAI_API_KEY"}}

Workflows name an entry; the key is read from the environment at request time and never stored,
logged, returned or put into an error message (server replies are scrubbed of it). Redirects are
refused, so the image goes only to the configured address.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..runtime import Runtime
from .planner import ChatOptions, downscaled

logger = logging.getLogger(__name__)

ENDPOINTS_ENV = "PARTGEN_VLM_ENDPOINTS"
ENDPOINTS_FILE = "partgen_vlm_endpoints.json"
MAX_TIMEOUT_S = 600.0
MAX_REPLY_BYTES = 4 * 1024 * 1024  # a plan is a few KB; a bigger body is not a chat reply
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_POLL_S = 0.1


class EndpointError(RuntimeError):
    """An endpoint is not configured, unreachable, slow, or answered with an error; never holds a key."""


class EndpointConfigError(EndpointError):
    """The operator's endpoint configuration is unreadable or incomplete."""


@dataclass(frozen=True)
class EndpointConfig:
    """One operator-configured endpoint. ``api_key_env`` is the name of the environment variable that
    holds the key ("" for servers without keys, e.g. a local Ollama). ``timeout_s``: how long one
    request may take (1..600 s). ``json_mode``: ask for ``response_format: json_object`` (OpenAI, vLLM,
    llama.cpp support it; leave it off for servers that reject the field)."""

    name: str
    base_url: str
    model: str
    api_key_env: str = ""
    timeout_s: float = 120.0
    json_mode: bool = False
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f"endpoint {self.name!r}{f' in {self.origin}' if self.origin else ''}"
        if not _NAME.match(self.name):
            raise EndpointConfigError(f"{where}: names are 1-64 letters, digits, spaces, '.', '_' or '-'")
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EndpointConfigError(f"{where}: base_url must be an http(s) URL such as http://127.0.0.1:11434/v1")
        if parsed.username or parsed.password:
            raise EndpointConfigError(
                f"{where}: base_url must not hold credentials; put the key in an environment variable and name that "
                f"variable in api_key_env"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise EndpointConfigError(f"{where}: 'model' is missing (the model name the server knows, e.g. 'gpt-4.1-mini')")
        if self.api_key_env and not _ENV_NAME.match(self.api_key_env):
            raise EndpointConfigError(
                f"{where}: api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key"
            )
        if not isinstance(self.timeout_s, (int, float)) or not math.isfinite(self.timeout_s) or not 1 <= self.timeout_s <= MAX_TIMEOUT_S:
            raise EndpointConfigError(f"{where}: timeout_s must be within 1..{MAX_TIMEOUT_S:g} seconds")

    @property
    def host(self) -> str:
        """Scheme, host and port only: what error messages may show."""
        parsed = urllib.parse.urlsplit(self.base_url)
        return f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}"


_FIELDS = ("base_url", "model", "api_key_env", "timeout_s", "json_mode")


def _entries(text: str, origin: str) -> dict[str, EndpointConfig]:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise EndpointConfigError(f"{origin} is not valid JSON ({error.__class__.__name__} at {error})") from None
    if isinstance(raw, dict) and isinstance(raw.get("endpoints"), dict):
        raw = raw["endpoints"]
    if not isinstance(raw, dict):
        raise EndpointConfigError(f'{origin} must be a JSON object of named endpoints: {{"name": {{"base_url": ..., "model": ...}}}}')
    found = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise EndpointConfigError(f"endpoint {name!r} in {origin} must be an object with base_url and model")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            hint = " (keys never go in this file: name their environment variable in api_key_env)" if any(
                "key" in k.lower() for k in unknown) else ""
            raise EndpointConfigError(
                f"endpoint {name!r} in {origin} has unknown fields {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}{hint}"
            )
        for required in ("base_url", "model"):
            if required not in entry:
                raise EndpointConfigError(f"endpoint {name!r} in {origin} has no {required}")
        found[str(name)] = EndpointConfig(name=str(name), origin=origin, **{k: entry[k] for k in _FIELDS if k in entry})
    return found


def load_endpoints(config_file: Optional[Path], environ: Mapping[str, str] = os.environ) -> dict[str, EndpointConfig]:
    """The operator's endpoints: those of ``config_file`` (when it exists), then those of the
    ``PARTGEN_VLM_ENDPOINTS`` environment variable, which win on equal names."""
    endpoints: dict[str, EndpointConfig] = {}
    if config_file is not None and Path(config_file).is_file():
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as error:
            raise EndpointConfigError(f"{config_file} could not be read ({error.strerror})") from None
        endpoints.update(_entries(text, str(config_file)))
    if environ.get(ENDPOINTS_ENV, "").strip():
        endpoints.update(_entries(environ[ENDPOINTS_ENV], f"the environment variable {ENDPOINTS_ENV}"))
    return endpoints


def find_endpoint(name: str, config_file: Optional[Path], environ: Mapping[str, str] = os.environ) -> EndpointConfig:
    endpoints = load_endpoints(config_file, environ)
    if name not in endpoints:
        configured = ", ".join(repr(n) for n in endpoints) or "none"
        raise EndpointConfigError(
            f"the endpoint {name!r} is not configured on this server (configured: {configured}). Only the server's "
            f"operator can add endpoints: in {ENDPOINTS_FILE} at the top of ComfyUI's user folder or in the "
            f"{ENDPOINTS_ENV} environment variable"
        )
    return endpoints[name]


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` or the pieces servers echo of it (OpenAI's "sk-ab***wxyz")."""
    if not secret:
        return text
    text = text.replace(secret, "[redacted]")
    if len(secret) >= 8:
        head, tail = re.escape(secret[:4]), re.escape(secret[-4:])
        text = re.sub(rf"\S*(?:{head}|{tail})\S*", "[redacted]", text)
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would send the image to an address the operator did not configure."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, "redirects are refused", headers, fp)


def _png_data_url(image: torch.Tensor, max_side: int) -> str:
    from PIL import Image

    pixels = (downscaled(image, max_side) * 255).round().to(torch.uint8).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class EndpointVLM:
    """The planner's :class:`~.planner.ChatModel` over an OpenAI-compatible ``/chat/completions``."""

    def __init__(self, config: EndpointConfig, environ: Mapping[str, str] = os.environ) -> None:
        self.config = config
        self.name = config.name
        self._environ = environ

    def __repr__(self) -> str:
        return f"EndpointVLM({self.config.name!r}, model={self.config.model!r})"

    def _key(self) -> str:
        if not self.config.api_key_env:
            return ""
        key = self._environ.get(self.config.api_key_env, "")
        if not key.strip():
            raise EndpointError(
                f"the endpoint {self.name!r} needs its key in the environment variable {self.config.api_key_env}, which is "
                f"not set on this server: set it in the environment ComfyUI starts in, then restart ComfyUI"
            )
        return key.strip()

    def _payload(self, system: str, messages: list[tuple[str, str]], image: torch.Tensor, options: ChatOptions) -> bytes:
        body_messages: list[dict] = [{"role": "system", "content": system}]
        for turn, (role, text) in enumerate(messages):
            if turn == 0:
                content = [{"type": "image_url", "image_url": {"url": _png_data_url(image, options.image_max_side)}},
                           {"type": "text", "text": text}]
                body_messages.append({"role": role, "content": content})
            else:
                body_messages.append({"role": role, "content": text})
        payload = {"model": self.config.model, "messages": body_messages, "temperature": options.temperature,
                   "seed": options.seed % 2**31, "max_tokens": options.max_new_tokens, "stream": False}
        if self.config.json_mode:
            payload["response_format"] = {"type": "json_object"}
        return json.dumps(payload).encode("utf-8")

    def chat(self, system: str, messages: list[tuple[str, str]], image: torch.Tensor, options: ChatOptions,
             runtime: Runtime) -> str:
        key = self._key()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=self._payload(system, messages, image, options), headers=headers,
                                         method="POST")
        outcome: dict = {}

        def send() -> None:
            try:
                opener = urllib.request.build_opener(_NoRedirect())
                with opener.open(request, timeout=self.config.timeout_s) as response:
                    outcome["body"] = response.read(MAX_REPLY_BYTES + 1)
            except BaseException as error:  # handed to the caller's thread below
                outcome["error"] = error

        # The request runs in a helper thread so that ComfyUI's interrupt is honoured while waiting.
        worker = threading.Thread(target=send, name=f"partgen-endpoint-{self.name}", daemon=True)
        worker.start()
        while worker.is_alive():
            runtime.check_interrupt()
            worker.join(_POLL_S)
        if "error" in outcome:
            raise self._explained(outcome["error"], key) from None
        return self._reply_text(outcome["body"], key)

    def _explained(self, error: BaseException, key: str) -> EndpointError:
        where = f"the endpoint {self.name!r} ({self.config.host})"
        if isinstance(error, urllib.error.HTTPError):
            detail = ""
            try:
                body = json.loads(error.read(64 * 1024) or b"{}")
                detail = body.get("error", {}).get("message", "") if isinstance(body.get("error"), dict) else str(body.get("error", ""))
            except Exception:  # the body is optional context; its absence must not hide the status
                detail = ""
            detail = redact(" ".join(str(detail).split())[:300], key)
            hint = {401: "check the key in the variable named by api_key_env", 403: "check the key's permissions",
                    404: "check base_url (it usually ends in /v1) and the model name",
                    429: "the server is rate limiting: wait and queue again"}.get(error.code, "see the server's log")
            if 300 <= error.code < 400:
                hint = "it redirected, and redirects are refused so the image only goes to the configured address; fix base_url"
            return EndpointError(f"{where} answered HTTP {error.code}{f' ({detail})' if detail else ''}: {hint}")
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError) or "timed out" in str(reason):
            return EndpointError(
                f"{where} did not answer within timeout_s = {self.config.timeout_s:g} s: the operator can raise timeout_s "
                f"in the endpoint's configuration; a smaller image_max_side or max_new_tokens shortens the request"
            )
        text = redact(str(reason), key)
        return EndpointError(f"{where} could not be reached ({text}): check that the server is running and base_url is right")

    def _reply_text(self, body: bytes, key: str) -> str:
        where = f"the endpoint {self.name!r} ({self.config.host})"
        if len(body) > MAX_REPLY_BYTES:
            raise EndpointError(f"{where} sent more than {MAX_REPLY_BYTES} bytes; that is not a chat reply")
        try:
            reply = json.loads(body)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            start = redact(" ".join(body[:120].decode("utf-8", "replace").split()), key)
            raise EndpointError(
                f"{where} did not answer in the OpenAI chat-completions format (no choices[0].message.content; the reply "
                f"starts {start!r}): check that base_url points at an OpenAI-compatible /v1 API"
            ) from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return redact(content if isinstance(content, str) else "", key)
