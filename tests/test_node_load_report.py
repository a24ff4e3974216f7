"""A stage whose dependency is missing is reported where the user looks (tier 1 + a ComfyUI import).

ComfyUI only logs a traceback when a stage module of ours fails to import; the user sees missing
nodes. ``nodes.node_classes`` turns the failure into a startup warning naming the package and the
install command, and adds a *PartGen: nodes that failed to load* node saying the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes import STAGE_MODULES, describe_import_failure

REPO = Path(__file__).resolve().parents[1]

# Runs in a child: ComfyUI's root must come first on sys.path (it owns `nodes`, `utils`, ...).
_CHILD = r"""
import importlib.util, json, logging, os, sys
comfy_root, pack, blocked = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:] = [comfy_root] + [p for p in sys.path if p not in ("", comfy_root)]
os.chdir(comfy_root)
import comfy.options
comfy.options.enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
sys.modules[blocked] = None  # as if the package were not installed
records = []
handler = logging.Handler()
handler.emit = lambda record: records.append(record.getMessage())
logging.getLogger().addHandler(handler)
spec = importlib.util.spec_from_file_location("comfyui_partgen", os.path.join(pack, "__init__.py"),
                                              submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules["comfyui_partgen"] = module
spec.loader.exec_module(module)
from comfyui_partgen.nodes import node_classes
classes = node_classes()
schema = classes[-1].define_schema()
try:
    classes[-1].execute()
    raised = ""
except RuntimeError as error:
    raised = str(error)
print(json.dumps({"ids": [c.define_schema().node_id for c in classes], "display": schema.display_name,
                  "description": schema.description, "raised": raised, "log": records}))
"""


def test_a_missing_package_is_named_with_its_install_command():
    failure = describe_import_failure("reconstruction", ModuleNotFoundError("No module named 'skimage'", name="skimage"))
    assert failure.reason == "the Python package 'scikit-image' is missing (import of 'skimage' failed)"
    assert "python -m pip install scikit-image" in failure.fix and "restart ComfyUI" in failure.fix
    assert failure.message.startswith("the reconstruction nodes could not be loaded: the Python package 'scikit-image'")
    other = describe_import_failure("export", RuntimeError("CUDA driver too old"))
    assert other.reason == "RuntimeError: CUDA driver too old" and "traceback" in other.fix


@pytest.mark.tier2
def test_missing_dependency_is_a_warning_and_a_node_in_the_list(comfyui_path):
    done = subprocess.run([sys.executable, "-c", _CHILD, str(comfyui_path), str(REPO), "diffusers"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    ids = report["ids"]
    # stages that do not need diffusers still load; the report node is added once, at the end
    assert "PartGenSaveParts" in ids and "PartGenRenderViews" in ids and "PartGenMultiView" not in ids
    assert ids[-1] == "PartGenLoadReport" and ids.count("PartGenLoadReport") == 1
    assert report["display"].startswith("PartGen: nodes that failed to load (multiview, segmentation, completion")
    expected = ("the multiview nodes could not be loaded: the Python package 'diffusers' is missing "
                "(import of 'diffusers.models' failed). Fix: install it into ComfyUI's Python environment "
                "(`python -m pip install diffusers`")
    assert expected in report["description"] and expected in report["raised"]
    assert any(expected in line for line in report["log"])
    assert set(STAGE_MODULES) >= {"multiview", "segmentation", "completion", "export", "rendering"}
