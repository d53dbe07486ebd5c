"""The settings file /etc/xen/xenrules.conf: one table of keys (config.SETTINGS)
behind the shipped file, the man page and `xenrules check`'s warnings."""
import os
import re

from xenrules import cli, config, manpage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "etc", "xen", "xenrules.conf")
RULES = os.path.join(REPO, "rules.d")


def _shipped_keys():
    """{key: default} of the shipped file's commented-out `#key = default` lines."""
    keys = {}
    with open(SHIPPED, encoding="utf-8") as f:
        for line in f:
            found = re.match(r"^#([a-z_]+) =(.*)$", line.rstrip("\n"))
            if found:
                keys[found.group(1)] = found.group(2).strip()
    return keys


def _check(tmp_path, monkeypatch, capsys, text):
    conf = tmp_path / "xenrules-w11b.conf"
    conf.write_text(text)
    monkeypatch.setenv("XENRULES_CONF", str(conf))
    code = cli.main(["--rules-path", RULES, "check"])
    out = capsys.readouterr()
    return conf, code, out.err


def test_shipped_file_lists_exactly_the_known_keys_with_their_defaults():
    assert _shipped_keys() == {k: d for k, (d, _, _) in config.SETTINGS.items()}
    with open(SHIPPED, encoding="utf-8") as f:
        assert f.read() == config.conf_file_text()   # regenerate it from the table
    assert config.read_conf(SHIPPED) == {}          # everything commented out


def test_shipped_file_is_installed_to_etc_xen():
    with open(os.path.join(REPO, "debian", "xenrules.install"), encoding="utf-8") as f:
        assert "etc/xen/xenrules.conf etc/xen/" in f.read().splitlines()


def test_every_conf_key_the_shipped_rules_read_is_a_known_setting():
    used = set()
    for name in os.listdir(RULES):
        with open(os.path.join(RULES, name), encoding="utf-8") as f:
            used |= set(re.findall(r"\{conf: *([A-Za-z0-9_]+)\}", f.read()))
    assert used and used <= set(config.SETTINGS), used - set(config.SETTINGS)


def test_check_warns_about_an_unknown_key_with_file_and_line(tmp_path, monkeypatch, capsys):
    conf, code, err = _check(tmp_path, monkeypatch, capsys,
                             "# site settings\ncapture_keep = 5\n\nantisppof = on\n")
    assert code == 0 and "Traceback" not in err
    assert f"{conf}:4: unknown setting 'antisppof' (known: {', '.join(config.SETTINGS)})" in err
    assert f"{conf}:2" not in err


def test_check_warns_about_a_bad_value_with_file_and_line(tmp_path, monkeypatch, capsys):
    conf, code, err = _check(tmp_path, monkeypatch, capsys,
                             "antispoof = yes\ncapture_keep = none\ncapture = relative/dir\n"
                             "capture_max_kb = 512\n")
    assert code == 0 and "Traceback" not in err
    assert f"{conf}:1: antispoof = 'yes' is none of on, off; using the default 'off'" in err
    assert f"{conf}:2: capture_keep = 'none' is not a whole number of at least 1" in err
    assert f"{conf}:3: capture = 'relative/dir' is not an absolute path" in err
    assert f"{conf}:4" not in err


def test_a_good_file_gives_no_warning(tmp_path, monkeypatch, capsys):
    with open(SHIPPED, encoding="utf-8") as f:
        uncommented = re.sub(r"(?m)^#([a-z_]+ =)", r"\1", f.read())   # every key at its default
    _, code, err = _check(tmp_path, monkeypatch, capsys,
                          uncommented + "antispoof = on\ncapture = /var/lib/xenrules/captures\n")
    assert code == 0 and "warning" not in err


def test_events_use_the_defaults_for_bad_capture_values(tmp_path):
    conf = tmp_path / "xenrules-w11b.conf"
    conf.write_text("capture = relative/dir\n")
    assert config.capture_setting({"XENRULES_CONF": str(conf)}) is None
    conf.write_text("capture = /nonexistent-w11b\ncapture_keep = 0\ncapture_max_kb = lots\n")
    got = config.capture_setting({"XENRULES_CONF": str(conf)})
    assert got["keep"] == 100 and got["max_bytes"] == 1024 * 1024


def test_man_page_lists_every_setting_with_its_default():
    with open(os.path.join(REPO, "man", "xenrules.8.in"), encoding="utf-8") as f:
        page = manpage.render("command", f.read())
    assert ".SH SETTINGS" in page
    for key, (default, _, meaning) in config.SETTINGS.items():
        label = f"{key} = {default}" if default else f"{key} ="
        assert f".B {manpage.esc(label)}\n{manpage.esc(meaning)}\n" in page, key
