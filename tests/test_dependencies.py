"""What the code imports is what pyproject.toml declares, and the model library imports no tooling (tier 1).

Reads every import statement (function-level ones too: optional dependencies are imported lazily) of
the shipped packages with ``ast``, so an undeclared import fails here rather than on a user's machine.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.tier1

REPO = Path(__file__).resolve().parents[1]
# Imports that are not ours to declare: the host's torch (never installed by the pack) and ComfyUI.
HOST = {"torch", "torchvision", "comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes", "app", "utils"}
# Import name → distribution name, where they differ.
DISTRIBUTIONS = {"PIL": "pillow", "skimage": "scikit-image", "fast_simplification": "fast-simplification",
                 "yaml": "pyyaml"}


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level module name → files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = lambda requirement: requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()  # noqa: E731
    extras = {extra: {name(r) for r in requirements} for extra, requirements in project["optional-dependencies"].items()}
    return {name(r) for r in project["dependencies"]}, extras


def _third_party(imports: dict[str, set[str]], own: set[str]) -> dict[str, set[str]]:
    return {m: f for m, f in imports.items() if m not in sys.stdlib_module_names and m not in HOST and m not in own}


def test_model_library_and_nodes_import_only_declared_dependencies():
    required, extras = _declared()
    own = {"partgen_models"}
    used = _third_party({**_imports("partgen_models"), **_imports("nodes")}, own)
    # The trainers (partgen_models/training/) are an optional feature: they may use the 'train' extra.
    training = lambda files: all(f.startswith("partgen_models/training/") for f in files)  # noqa: E731
    undeclared = {m: sorted(files) for m, files in used.items()
                  if DISTRIBUTIONS.get(m, m).lower() not in required
                  and not (training(files) and DISTRIBUTIONS.get(m, m).lower() in extras.get("train", set()))}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"
    unused = {d for d in required if d not in {DISTRIBUTIONS.get(m, m).lower() for m in used}}
    assert "accelerate" in extras["train"] and "accelerate" not in required  # the pack runs without it
    assert not unused, f"declared in [project] dependencies but imported nowhere in the pack: {sorted(unused)}"


def test_tooling_dependencies_are_an_extra_not_a_model_dependency():
    required, extras = _declared()
    assert "aiohttp" not in required and "aiohttp" in extras["client"]
    used = _third_party(_imports("partgen_tools"), {"partgen_tools", "partgen_models"})
    assert set(used) <= {"aiohttp", "tqdm"}, used


def test_the_model_library_imports_no_tooling_comfyui_or_test_code():
    imports = _imports("partgen_models")
    for forbidden in ("partgen_tools", "aiohttp", "comfy", "comfy_api", "folder_paths", "comfyui_harness", "tests"):
        assert forbidden not in imports, f"partgen_models imports {forbidden}: {sorted(imports[forbidden])}"


def test_tools_and_tooling_use_no_test_code():
    """tools/ and partgen_tools/ obtain and start ComfyUI through partgen_tools.comfyui_host; the tests
    build on it (tests/comfyui_harness.py), never the other way round."""
    for package in ("tools", "partgen_tools"):
        imports = _imports(package)
        for forbidden in ("comfyui_harness", "tiny_models", "conftest", "tests"):
            assert forbidden not in imports, f"{package}/ imports {forbidden}: {sorted(imports[forbidden])}"
        for path in sorted((REPO / package).glob("*.py")):
            text = path.read_text(encoding="utf-8")
            assert 'ROOT / "tests"' not in text and "sys.path.insert(0, str(_TESTS" not in text, \
                f"{path.relative_to(REPO)} puts the tests folder on sys.path"


def test_the_harness_reuses_the_tooling_host_code_instead_of_copying_it():
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import comfyui_harness as harness
    finally:
        sys.path.remove(str(REPO / "tests"))
    from partgen_tools import comfyui_host

    for name in ("comfyui_root", "ensure_cached_comfyui", "unpack_comfyui", "download_comfyui_archive",
                 "selected_hosts", "free_port", "write_tiny_models", "HOSTS", "ComfyUIUnavailable"):
        assert getattr(harness, name) is getattr(comfyui_host, name), name
    assert issubclass(harness.ComfyUIServer, comfyui_host.ComfyUIServer)
    defined_in_harness = {n.name for n in ast.parse((REPO / "tests" / "comfyui_harness.py").read_text()).body
                          if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined_in_host = {n.name for n in ast.parse((REPO / "partgen_tools" / "comfyui_host.py").read_text()).body
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    # make_base_dir and ComfyUIServer are extended (they call or subclass the tooling's), not copied
    assert defined_in_harness & defined_in_host <= {"make_base_dir", "ComfyUIServer"}, defined_in_harness & defined_in_host
