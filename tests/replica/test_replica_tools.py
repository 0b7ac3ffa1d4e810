"""gpt2_chat.replica.tools against fake `dfx`/`icp` executables on PATH."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from replica_fakes import BROKEN_VERSION, FAKE_DFX, FAKE_ICP, FakeServer, FakeTools, cbor

from gpt2_chat.errors import BackendError
from gpt2_chat.replica.tools import (
    CommandFailed,
    CommandLog,
    CommandRecord,
    ReplicaToolMissing,
    ReplicaTools,
    Timeouts,
    find_tools,
    probe_replica,
    run_command,
)

CANISTER_ID = "bkyz2-fmaaa-aaaaa-qaaaq-cai"


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "dfx.json").write_text('{"canisters": {"gpt2_backend": {"type": "custom"}}}')
    return root


def _manager(root: Path | None, url: str, **kw: object) -> ReplicaTools:
    return ReplicaTools(root, log=CommandLog(), url_override=url, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- detection


def test_detects_both_tools_with_versions(fake_tools: FakeTools) -> None:
    dfx = fake_tools.install("dfx", FAKE_DFX)
    icp = fake_tools.install("icp", FAKE_ICP)
    log = CommandLog()
    found = find_tools(log)
    assert [(t.name, t.path, t.version) for t in found] == [
        ("dfx", str(dfx), "0.29.2"),
        ("icp", str(icp), "0.2.2"),
    ]
    assert [r.argv for r in log.entries()] == [(str(dfx), "--version"), (str(icp), "--version")]
    assert found[0].local_url == "http://127.0.0.1:4943"
    assert found[1].local_url == "http://127.0.0.1:8000"
    assert str(found[0]) == f"dfx 0.29.2 ({dfx})"


def test_tool_whose_version_fails_is_listed_without_version(fake_tools: FakeTools) -> None:
    fake_tools.install("dfx", BROKEN_VERSION)
    (tool,) = find_tools(CommandLog())
    assert tool.name == "dfx" and tool.version is None and "it broke" in tool.version_output


def test_prefers_dfx_unless_told(fake_tools: FakeTools) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    fake_tools.install("icp", FAKE_ICP)
    assert ReplicaTools(log=CommandLog()).tool().name == "dfx"
    assert ReplicaTools(prefer="icp", log=CommandLog()).tool().name == "icp"
    with pytest.raises(ValueError):
        ReplicaTools(prefer="docker")


def test_missing_tools(fake_tools: FakeTools, tmp_path: Path, closed_port: int) -> None:
    assert find_tools(CommandLog()) == []
    manager = _manager(_project(tmp_path), f"http://127.0.0.1:{closed_port}")
    for action in (manager.start, manager.stop, lambda: manager.deploy()):
        with pytest.raises(ReplicaToolMissing) as err:
            action()
        message = str(err.value)
        assert "neither `dfx` nor `icp` is installed" in message
        assert 'sh -ci "$(curl -fsSL https://internetcomputer.org/install.sh)"' in message
        assert "\n" not in message
    # A missing tool is a BackendError, so the CLI reports it in one line.
    assert issubclass(ReplicaToolMissing, BackendError)
    # status() still works: it only asks the endpoint.
    status = manager.status(ping=True)
    assert not status.running and status.tool is None and status.ping is None
    assert "no dfx/icp on PATH" in str(status)


def test_missing_preferred_tool_names_it(fake_tools: FakeTools) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    with pytest.raises(ReplicaToolMissing, match=r"`icp` is not installed.*found: dfx"):
        ReplicaTools(prefer="icp", log=CommandLog()).tool()


# ---------------------------------------------------------------------- commands


def test_dfx_start_stop_status(
    fake_tools: FakeTools, tmp_path: Path, closed_port: int, http_server: FakeServer
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    root = _project(tmp_path)
    manager = _manager(root, f"http://127.0.0.1:{closed_port}")

    started = manager.start()
    assert started.command is not None and started.command.ok
    assert not started.running  # the fake starts nothing; the probe says so
    manager.start(clean=True)
    manager.stop()
    status = manager.status(ping=True)
    assert status.ping is not None and "healthy" in status.ping.output

    calls = fake_tools.calls()
    assert [c[2] for c in calls] == [
        "--version",
        "start --background",
        "start --background --clean",
        "stop",
        "ping",
    ]
    assert all(c[1] == str(root) for c in calls[1:])  # commands run in the project root

    entries = manager.log.entries()
    lines = [e.command_line.split(" ", 1)[1] for e in entries]
    assert lines == [
        "--version",
        "start --background",
        "start --background --clean",
        "stop",
        "ping",
    ]
    start = entries[1]
    assert start.returncode == 0 and start.ok and not start.timed_out
    assert "Replica API running" in start.output
    assert start.cwd == str(root) and start.duration >= 0
    assert str(start).startswith(f"$ {start.command_line}  [exit 0 in ")


def test_start_is_a_no_op_when_the_network_answers(
    fake_tools: FakeTools, tmp_path: Path, http_server: FakeServer
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    http_server.status = lambda r: (
        200,
        cbor({"impl_version": "0.9.0", "replica_health_status": "healthy", "root_key": b"k"}),
    )
    manager = _manager(_project(tmp_path), http_server.url)
    status = manager.start()
    assert status.running and status.healthy and status.command is None
    assert status.impl_version == "0.9.0"
    assert [c[2] for c in fake_tools.calls()] == ["--version"]
    assert str(status) == (
        f"local network at {http_server.url}: running, healthy (replica 0.9.0; dfx 0.29.2)"
    )
    assert [r.path for r in http_server.status_requests] == ["/api/v2/status"]


def test_clean_start_stops_a_running_network_first(
    fake_tools: FakeTools, tmp_path: Path, http_server: FakeServer
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    http_server.status = lambda r: (200, cbor({"replica_health_status": "healthy"}))
    _manager(_project(tmp_path), http_server.url).start(clean=True)
    assert [c[2] for c in fake_tools.calls()] == ["--version", "stop", "start --background --clean"]


def test_icp_commands(
    fake_tools: FakeTools, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools.install("icp", FAKE_ICP)
    root = _project(tmp_path)
    manager = _manager(root, f"http://127.0.0.1:{closed_port}")
    manager.start()
    manager.stop()
    manager.status(ping=True)
    with pytest.raises(BackendError, match="needs an icp.yaml"):
        manager.deploy()
    (root / "icp.yaml").write_text("canisters: []\n")
    manager.deploy()
    assert [c[2] for c in fake_tools.calls()] == [
        "--version",
        "network start -d",
        "network stop",
        "network ping",
        "deploy gpt2_backend",
    ]
    # Without an explicit URL the icp network is looked for on its own port.
    assert ReplicaTools(log=CommandLog()).url == "http://127.0.0.1:8000"


def test_deploy_runs_dfx_deploy_in_the_project_root(fake_tools: FakeTools, tmp_path: Path) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    root = _project(tmp_path)
    manager = _manager(None, "http://127.0.0.1:9")
    result = manager.deploy(root)
    assert result.canister_id == CANISTER_ID  # read back from .dfx/local/canister_ids.json
    assert result.record.argv[1:] == ("deploy", "gpt2_backend")
    assert fake_tools.calls()[-1] == ["dfx", str(root), "deploy gpt2_backend"]
    assert "Deployed canisters." in str(result)
    manager.deploy(root, network="ic", yes=True)
    assert fake_tools.calls()[-1][2] == "deploy gpt2_backend --network ic --yes"


def test_deploy_needs_dfx_json(fake_tools: FakeTools, tmp_path: Path) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    with pytest.raises(BackendError, match="no dfx.json in"):
        _manager(None, "http://127.0.0.1:9").deploy(tmp_path)
    with pytest.raises(BackendError, match="needs the project directory"):
        _manager(None, "http://127.0.0.1:9").deploy()


def test_failing_command_raises_with_its_last_line(
    fake_tools: FakeTools, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    monkeypatch.setenv("FAKE_START_EXIT", "255")
    manager = _manager(_project(tmp_path), f"http://127.0.0.1:{closed_port}")
    with pytest.raises(CommandFailed) as err:
        manager.start()
    assert str(err.value) == (
        f"`{err.value.record.command_line}` failed (exit 255): "
        "Replica API running on 127.0.0.1:4943"
    )
    assert err.value.record.returncode == 255
    assert manager.log.entries()[-1] is err.value.record


def test_timeout_stops_the_command_and_what_it_started(
    fake_tools: FakeTools, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    monkeypatch.setenv("FAKE_START_SLEEP", "30")
    manager = _manager(
        _project(tmp_path), f"http://127.0.0.1:{closed_port}", timeouts=Timeouts(start=0.5)
    )
    t0 = time.monotonic()
    with pytest.raises(CommandFailed, match=r"did not finish within 0.5 s and was stopped"):
        manager.start()
    assert time.monotonic() - t0 < 5
    record = manager.log.entries()[-1]
    assert record.timed_out and record.returncode is None and "timed out" in record.outcome
    assert "Running dfx start" in record.output  # output up to the timeout is kept
    sleeper = int(fake_tools.pidfile.read_text())
    deadline = time.monotonic() + 3
    while _alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(sleeper)  # the whole process group was stopped


def test_background_child_holding_stdout_does_not_block(
    fake_tools: FakeTools, tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools.install("dfx", FAKE_DFX)
    monkeypatch.setenv("FAKE_BACKGROUND", "1")
    manager = _manager(_project(tmp_path), f"http://127.0.0.1:{closed_port}")
    t0 = time.monotonic()
    try:
        status = manager.start()
        assert time.monotonic() - t0 < 5
        assert status.command is not None and "Replica API running" in status.command.output
    finally:
        if fake_tools.pidfile.exists():
            os.kill(int(fake_tools.pidfile.read_text()), 15)  # the sleeper this test started


def test_command_that_cannot_start(tmp_path: Path) -> None:
    log = CommandLog()
    record = run_command([str(tmp_path / "nope")], timeout=5, log=log)
    assert not record.ok and record.error and record.returncode is None
    assert "did not start" in record.outcome
    assert log.entries() == [record]


def test_command_log_listeners_and_bounds() -> None:
    log = CommandLog(max_entries=2)
    seen: list[CommandRecord] = []
    unsubscribe = log.subscribe(seen.append)

    def broken(record: CommandRecord) -> None:
        raise RuntimeError("a broken listener must not break commands")

    log.subscribe(broken)
    record = run_command(["/bin/sh", "-c", "echo out; echo err >&2; exit 4"], timeout=5, log=log)
    assert record.returncode == 4 and record.output == "out\nerr\n"
    assert [r.finished for r in seen] == [False, True]
    assert seen[0].argv == record.argv and seen[1] is record
    unsubscribe()
    for _ in range(3):
        run_command(["/bin/sh", "-c", "true"], timeout=5, log=log)
    assert len(seen) == 2 and len(log) == 2  # bounded, newest kept
    assert all(r.command_line == "/bin/sh -c true" for r in log.entries())
    log.clear()
    assert log.entries() == []


def test_output_is_plain_text(tmp_path: Path) -> None:
    record = run_command(
        ["/bin/sh", "-c", r"printf '\033[32mgreen\033[0m\r\n'"], timeout=5, log=None
    )
    assert record.output == "green\n"


# ---------------------------------------------------------------------- status probe


def test_probe_reports_what_answers(http_server: FakeServer, closed_port: int) -> None:
    assert probe_replica(f"http://127.0.0.1:{closed_port}").detail == "not running"
    http_server.status = lambda r: (200, cbor({"replica_health_status": "starting"}))
    probe = probe_replica(http_server.url)
    assert probe.reachable and not probe.healthy and probe.health == "starting"
    http_server.status = lambda r: (200, b"<html>hello</html>")
    probe = probe_replica(http_server.url)
    assert probe.reachable and not probe.healthy and "not like an IC replica" in probe.detail
    http_server.status = lambda r: (503, b"")
    assert probe_replica(http_server.url).detail == "answers HTTP 503"


def test_probe_times_out(http_server: FakeServer) -> None:
    def slow(_: object) -> tuple[int, bytes]:
        http_server.release.wait(5)
        return 200, b""

    http_server.status = slow
    t0 = time.monotonic()
    probe = probe_replica(http_server.url, timeout=0.3)
    assert not probe.reachable and "no answer within 0.3 s" in probe.detail
    assert time.monotonic() - t0 < 3
