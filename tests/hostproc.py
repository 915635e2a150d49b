"""The waSCC host (python -m wascc.host) as a subprocess on a free
loopback port, for the tests that talk HTTP to it."""

import http.client
import os
import signal
import socket
import subprocess
import sys

from conftest import REPO


class Host:
    """Started in the constructor; `banner` is its first line ("serving ...")
    once it listens, "" if it exited. Stopped with SIGINT, as by Ctrl-C."""

    def __init__(self, actor, *args, port=0):
        self.port = port or free_port()
        cmd = [sys.executable, "-m", "wascc.host", str(actor), "--port", str(self.port),
               "--quiet", *map(str, args)]
        env = dict(os.environ, PYTHONPATH=str(REPO / "site_scons"))
        env.setdefault("WASCC_HOST_CACHE", str(REPO / "build" / "wascc-host-cache"))  # not ~/.cache
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.banner = self.proc.stdout.readline()

    def request(self, method, body=b"", path="/", headers=None, timeout=60):
        return request(self.port, method, body, path, headers, timeout)

    def stop(self):
        """(exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def request(port, method, body=b"", path="/", headers=None, timeout=60):
    """(status, headers, body) of one request on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refusal(actor_path, *args):
    """The host's one-line error for an actor it must not run."""
    h = Host(actor_path, *args)
    code, err = h.stop()
    assert h.banner == "" and code == 1, (h.banner, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err
