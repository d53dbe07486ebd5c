"""Logging: the log file like the originals' stderr, stderr when it cannot be written."""
from xenrules.log import Log


def test_records_at_or_above_the_level_go_to_the_log_file(tmp_path):
    path = tmp_path / "xen-hotplug.log"
    log = Log("vif-bridge", "info", str(path))
    log("debug", "hidden")
    log("info", "shown")
    log("err", "bad")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("info: shown") and " vif-bridge[" in lines[0]
    assert lines[1].endswith("err: bad")


def test_unwritable_log_file_falls_back_to_stderr(tmp_path, capfd):
    log = Log("vif-bridge", "debug", str(tmp_path / "missing-dir" / "log"))
    log("err", "cannot reach the bridge")
    assert "err: cannot reach the bridge" in capfd.readouterr().err


def test_level_names_of_logging_sh_are_accepted(tmp_path):
    path = tmp_path / "log"
    Log("x", "warn", str(path))("warning", "w")
    Log("x", "error", str(path))("warning", "not shown")
    assert path.read_text().count("warning: ") == 1
