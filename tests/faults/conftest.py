"""The fault suites share one uploaded, loaded state dir and its greedy reference."""

from __future__ import annotations

import pytest

from tests.faults.support import Cli


@pytest.fixture(scope="session")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, list[int]]:
    cli = Cli(tmp_path_factory.mktemp("loaded"))
    result = cli.run("upload", str(cli.prepare()))
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return cli, cli.greedy_tokens()
