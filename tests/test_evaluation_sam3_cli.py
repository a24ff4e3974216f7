"""The sam3 evaluation backend from the command line (tier 1, tiny SAM 3 checkpoint)."""

from __future__ import annotations

import pytest

from partgen_models.evaluation.cli import main
from tiny_models import tiny_models_dir

pytestmark = pytest.mark.tier1


def test_sam3_backend_runs_from_the_command_line_with_names(capsys):
    argv = ["--procedural", "--n", "1", "--size", "48", "--backend", "sam3", "--names", "seat, leg",
            "--models-dir", str(tiny_models_dir())]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| sam3 | 1 |" in table  # one object evaluated; seeded mode is n/a for a name-prompted backend


def test_sam3_backend_without_names_says_which_option_to_add(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--procedural", "--n", "1", "--backend", "sam3"])
    assert exit_info.value.code == 2
    assert "--backend sam3 segments the parts you name: add --names 'seat, leg, back'" in capsys.readouterr().err
