"""xenrules.sources.nat: vif-nat's address arithmetic, checked against bash and awk.

The expressions below are those of Debian's 4.17 vif-nat (routing_ip, the
vif_ip line, ip_from_dom, the hostname), run by the machine's bash and awk:
the oracle for every input, the odd ones included.
"""

import os
import subprocess

import pytest

from xenrules.sources import all_source_kinds, nat, source_class
from xenrules.errors import StepError

# vif-nat: routing_ip "$ip", vif_ip=`echo ${ip} | awk -F/ '{print $1}'`
BASH_ROUTER = """echo $(echo $1 | awk -F. '{print $1"."$2"."$3"."$4 + 127}')"""
BASH_HOST = """echo ${1} | awk -F/ '{print $1}'"""
# vif-nat: vifid=$(( $vifid + 1 )), ip_from_dom, hostname
BASH_DEFAULTS = """domid=$1; vifid=$2; vifid=$(( $vifid + 1 ))
echo "10.$(( $domid / 256 )).$(( $domid % 256 )).$vifid/16"
hostname=dom$domid
if [ "$vifid" != "1" ]; then hostname="$hostname-$vifid"; fi
echo "$vifid $hostname"
"""

ODD_IPS = ["10.0.1.1/16", "10.0.1.1", "192.168.7.200/24", "10.0.1.1/24 10.0.2.1/24",
           "192.168.1.5 192.168.1.6", "10.0.1", "1.2.3.1e3", "1.2.3.0x10", "1.2.3.-5",
           "1.2.3.+5", "1.2.3. 7", "1.2.3.99999999999", "1.2.3.inf", "1.2.3.nan", "1.2.3.-nan",
           "fe80::1", "2001:db8::5/64", "1.2.3.4.5", "1.2.3.2147483520", "1.2.3.2147483521",
           "1.2.3.-2147483774", "1.2.3.-2147483775", "1.2.3.1e20", "1.2.3.1e400", "1.2.3.4e",
           "1.2.3.4e+1x", "1.2.3.0x1P-2", "1.2.3.0x", "  10.0.1.1/16  ", "10.0.1.1\t/16",
           "a.b.c.d", "10.0.0.255"]


def bash(script, *args):
    proc = subprocess.run(["bash", "-c", script, "bash"] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={"PATH": "/usr/bin:/bin", "LANG": "POSIX"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.rstrip("\n")


def resolve(kind, arg):
    return source_class(kind).resolve(None, arg)[0]


def test_every_nat_source_is_plugged_in():
    kinds = {k for k in all_source_kinds() if k.startswith("nat.")}
    assert kinds == {"nat.vifid", "nat.guest_address", "nat.router_address", "nat.host_address",
                     "nat.first_file", "nat.routes_via"}


# Addresses whose router address the original computes as an address: the
# same on every release, so xenrules gives what the machine's awk prints.
ROUTABLE_IPS = ["10.0.1.1/16", "10.0.1.1", "10.0.1.1/24 10.0.2.1/24", "192.168.1.5 192.168.1.6",
                "  10.0.1.1/16  ", "10.0.1.1\t/16", "10.0.0.128", "0.0.0.0/0"]
# Everything else: the original's awk prints a non-address, and which one
# depends on the release's mawk (bookworm 2147483647, trixie 2.14748e+09, inf,
# nan). Intended difference: refused with a clear error on every release.
UNROUTABLE_IPS = [ip for ip in ODD_IPS if ip not in ROUTABLE_IPS] + [
    "10.0.0.129", "192.168.7.200/24", "10.0.1.1/33", "010.0.1.1", "10.0.1.01", "", "  ",
    "1.2.3.4;id", "x" * 4096, "10.0.1.1\x00"]


@pytest.mark.parametrize("ip", ROUTABLE_IPS)
def test_router_address_of_an_address_is_what_the_originals_awk_prints(ip):
    assert resolve("nat.router_address", ip) == bash(BASH_ROUTER, ip)


@pytest.mark.parametrize("ip", [ip for ip in UNROUTABLE_IPS if ip.strip()])
def test_router_address_of_anything_else_is_refused_not_computed_like_awk(ip):
    with pytest.raises(StepError, match=r"nat\.router_address: .*(not an IPv4 address|not an octet)"):
        resolve("nat.router_address", ip)


def test_router_address_of_no_address_is_empty():
    assert resolve("nat.router_address", "  ") == ""


@pytest.mark.parametrize("ip", ODD_IPS)
def test_host_address_is_what_the_originals_awk_prints(ip):
    assert resolve("nat.host_address", ip) == bash(BASH_HOST, ip)


def test_router_address_of_the_usual_guest_address():
    assert resolve("nat.router_address", "10.0.1.1/16") == "10.0.1.128"
    assert resolve("nat.host_address", "10.0.1.1/16") == "10.0.1.1"


@pytest.mark.parametrize("domid,handle", [(1, 0), (1, 1), (0, 0), (255, 0), (256, 0), (300, 2),
                                          (65535, 7), (32752, 254)])
def test_default_guest_address_vifid_and_hostname_are_the_originals(domid, handle):
    address, words = bash(BASH_DEFAULTS, str(domid), str(handle)).split("\n")
    vifid, hostname = words.split()
    assert resolve("nat.vifid", str(handle)) == vifid
    assert resolve("nat.guest_address", f"{domid} {vifid}") == address
    assert hostname == (f"dom{domid}" if vifid == "1" else f"dom{domid}-{vifid}")


def test_guest_address_of_domid_300():
    assert resolve("nat.guest_address", "300 3") == "10.1.44.3/16"


@pytest.mark.parametrize("bad", ["", "x", "-1", "07", "1.5", "1 2"])
def test_vifid_of_something_that_is_not_a_handle_is_empty(bad):
    assert resolve("nat.vifid", bad) == ""


@pytest.mark.parametrize("bad", ["", "1", "1 2 3", "a 1", "1 b", "-1 1"])
def test_guest_address_needs_domid_and_vifid(bad):
    assert resolve("nat.guest_address", bad) == ""


def test_first_file_is_the_first_regular_file(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    b.mkdir()                          # a directory is not a file
    c.write_text("x")
    assert resolve("nat.first_file", f"-f {a} {b} {c}") == str(c)
    assert resolve("nat.first_file", f"-f {a} {b}") == ""


def test_first_file_x_wants_an_executable(tmp_path):
    plain, script = tmp_path / "plain", tmp_path / "script"
    plain.write_text("x")
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o755)
    assert resolve("nat.first_file", f"-x {plain} {script}") == str(script)
    assert resolve("nat.first_file", f"-f {plain} {script}") == str(plain)


def test_first_file_follows_symlinks(tmp_path):
    target, link, dangling = tmp_path / "t", tmp_path / "l", tmp_path / "d"
    target.write_text("x")
    link.symlink_to(target)
    dangling.symlink_to(tmp_path / "missing")
    assert resolve("nat.first_file", f"-f {dangling} {link}") == str(link)


def test_first_file_refuses_another_test(tmp_path):
    (tmp_path / "a").write_text("x")
    assert resolve("nat.first_file", f"-e {tmp_path / 'a'}") == ""


ROUTES = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
          "vif1.10\t0102000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n"
          "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")


def test_routes_via_matches_the_whole_device_name(tmp_path):
    table = tmp_path / "route"
    table.write_text(ROUTES)
    assert nat.routes_via("vif1.10", str(table))
    assert nat.routes_via("eth0", str(table))
    # the original's `grep "dev vif1.1"` would say yes here
    assert not nat.routes_via("vif1.1", str(table))
    assert not nat.routes_via("Iface", str(table))
