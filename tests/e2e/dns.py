"""A real DNS server for the discovery tests: dnsmasq serving names from a hosts file.

dnsmasq comes from Debian's `dnsmasq-base` (scripts/e2e.sh installs it). It binds a free
loopback port, reads only the hosts file the test writes (no upstream, no /etc/hosts), answers
NXDOMAIN for any other name, gives every record a 1 s TTL, and re-reads the file on SIGHUP.
It is stopped by PID.
"""

import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

DNSMASQ = "/usr/sbin/dnsmasq"


def free_udp_and_tcp_port() -> int:
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class Dns:
    """dnsmasq on 127.0.0.1:`port`; `set(name, addresses)` rewrites the hosts file and reloads."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="bridge-dns-"))
        self.hosts = self.dir / "hosts"
        self.hosts.write_text("")
        self.hosts.chmod(0o644)
        self.port = free_udp_and_tcp_port()
        self.address = f"127.0.0.1:{self.port}"
        self.names = {}
        self.proc = None
        self.start()

    def start(self) -> None:
        args = [DNSMASQ, "--keep-in-foreground", "--log-facility=-", f"--port={self.port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                f"--addn-hosts={self.hosts}", "--local-ttl=1", "--local=/#/",
                f"--pid-file={self.dir / 'pid'}"]
        if os.geteuid() == 0:
            args += ["--user=root", "--group=root"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start")

    def _answers(self) -> bool:
        # A query for a name it does not know: any answer means it is up.
        query = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 b"\x05probe\x04test\x00\x00\x01\x00\x01")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(query, ("127.0.0.1", self.port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False

    def set(self, name: str, addresses: list) -> None:
        self.names[name] = list(addresses)
        lines = [f"{a} {n}" for n, addrs in self.names.items() for a in addrs]
        self.hosts.write_text("\n".join(lines) + "\n")
        os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
