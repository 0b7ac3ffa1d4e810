"""`gpt2-chat info`, `controllers` and `reset` on the embedded runtime's state dir."""

from __future__ import annotations

import json
from pathlib import Path

from gpt2_chat.identity import default_identity
from tests.faults.support import Cli, Outcome

OTHER = "aaaaa-aa"


def one_error_line(outcome: Outcome, *fragments: str) -> None:
    assert outcome.returncode == 1, (outcome.returncode, outcome.stderr)
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_controllers_info_and_reset(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    anonymous = cli.run("--identity", "anonymous", "info", "--json")
    assert anonymous.returncode == 0, anonymous.stderr
    own = default_identity(tmp_path / "state" / "identity.pem").sender().to_str()
    assert json.loads(anonymous.stdout)["controllers"] == [own]

    one_error_line(
        cli.run("--identity", "anonymous", "controllers", "add", OTHER), "not a controller"
    )
    added = cli.run("controllers", "add", OTHER)
    assert added.returncode == 0 and added.stdout.split() == [own, OTHER], added.stderr
    removed = cli.run("controllers", "remove", OTHER)
    assert removed.returncode == 0 and removed.stdout.split() == [own], removed.stderr

    controllers_file = tmp_path / "state" / "controllers.json"
    controllers_file.write_text("[5]")
    one_error_line(cli.run("info"), str(controllers_file), "gpt2-chat reset")

    one_error_line(cli.run("reset"), "--yes")  # no terminal: no question, no change
    assert controllers_file.exists()
    reset = cli.run("reset", "--yes")
    assert reset.returncode == 0 and "moved the canister's state to" in reset.stdout
    assert cli.info()["controllers"] == [own]  # a new canister, the same own identity
