"""Talk to nftables in libnftables' JSON: one call is one atomic transaction.

Through Debian's python3-nftables (libnftables by ctypes, in-process) when it
is installed, else through `nft -j -f -` (the same JSON on stdin). Commands are
Python data, never text: a value from XenStore can only ever be a value.

Measured (a fresh process in a namespace, one transaction of an add and a
delete, median of 8, a loaded 2-core machine): importing the module, opening
a context and the transaction take 4.0 ms; the same JSON through
`nft -j -f -` (importing subprocess, fork + exec, nft's own start) 21 ms.
So the library is the transport, the command the fallback.
"""
import json

from .errors import StepError


class NftError(StepError):
    """nftables refused a transaction (nothing of it took effect)."""


class Nft:
    """One nftables connection for an event (in the current network namespace)."""

    def __init__(self, timeout=10):
        self.timeout = timeout
        try:
            import nftables         # python3-nftables
        except ImportError:
            self._lib = None
        else:
            self._lib = nftables.Nftables()
            self._lib.set_json_output(True)
            self._lib.set_handle_output(False)

    @property
    def transport(self):
        return "libnftables" if self._lib else "nft -j -f -"

    def run(self, commands):
        """Run the commands as one transaction; the decoded JSON output (may be
        empty). NftError with nftables' message if it refused them all."""
        if not commands:
            return {}
        document = {"nftables": list(commands)}
        if self._lib:
            rc, out, err = self._lib.json_cmd(document)
            if rc != 0:
                raise NftError(f"nftables: {_first_line(err)}")
            return out or {}
        return self._run_nft(json.dumps(document))

    def run_fixed_text(self, text):
        """Run nft commands given as text, as one transaction. Only for text
        that is a constant of the package: no event value may be part of it."""
        if self._lib:
            self._lib.set_json_output(False)
            try:
                rc, _out, err = self._lib.cmd(text)
            finally:
                self._lib.set_json_output(True)
            if rc != 0:
                raise NftError(f"nftables: {_first_line(err)}")
            return
        self._run_nft(text, json_in=False)

    def _run_nft(self, text, json_in=True):
        import subprocess       # only without python3-nftables
        from . import deadline
        try:
            done = deadline.run(["nft"] + (["-j"] if json_in else []) + ["-f", "-"], "nft -f -",
                                self.timeout, input=text)
        except subprocess.TimeoutExpired:
            raise NftError(f"nft did not finish within {self.timeout} s") from None
        except OSError as e:
            raise NftError(f"cannot run nft: {e}") from None
        if done.returncode != 0:
            raise NftError(f"nftables: {_first_line(done.stderr)}")
        return json.loads(done.stdout) if json_in and done.stdout.strip() else {}

    def list_table(self, family, table):
        """The objects of a table as JSON, or None if there is no such table."""
        try:
            out = self.run([{"list": {"table": {"family": family, "name": table}}}])
        except NftError as e:
            if "No such file or directory" in str(e):
                return None
            raise
        return out.get("nftables", [])


def _first_line(text):
    lines = [l for l in (text or "").splitlines() if l.strip()]
    # libnftables says "internal:0:0-0: Error: ..." for JSON input
    line = lines[0] if lines else "refused (no message)"
    return line.split("Error: ", 1)[-1]
