"""systemd's notification protocol (src/common/sd_notify.c, Type=notify and WatchdogSec=
in packaging/systemd/): vcr-server and vcr-agent say READY=1 once they serve, feed the
watchdog from their event loop (so a stopped loop stops feeding it), and say STOPPING=1
on SIGTERM.  The test plays systemd's side of the socket: no lab and no VM (the agent
has no VMs, on loopback); the Debian standby VM runs the same agent under a real
systemd in the Debian tests."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import build_dir

WATCHDOG_USEC = 300000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Notify:
    """A NOTIFY_SOCKET: a unix datagram socket, by path or in the abstract namespace."""

    def __init__(self, tmp_path, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"vcr-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = str(tmp_path / "notify.sock")
            self.sock.bind(self.env)

    def recv(self, timeout):
        """The next message's KEY=VALUE pairs as a dict, or None after timeout s."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)

    def wait_for(self, key, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None and key in msg:
                return msg
        pytest.fail(f"no {key}= on {self.env} within {timeout} s")

    def drain(self, seconds):
        """Every message of the next `seconds`."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None:
                got.append(msg)
        return got

    def close(self):
        self.sock.close()


def start(argv, notify, tmp_path, name, watchdog_pid=None):
    env = dict(os.environ, NOTIFY_SOCKET=notify.env, WATCHDOG_USEC=str(WATCHDOG_USEC))
    env.pop("WATCHDOG_PID", None)
    if watchdog_pid is not None:
        env["WATCHDOG_PID"] = str(watchdog_pid)
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture
def configs(tmp_path):
    agents, api = free_port(), free_port()
    (tmp_path / "server.yaml").write_text(
        f"listen: 127.0.0.1:{agents}\napi: 127.0.0.1:{api}\njournal: {tmp_path}/journal.db\n"
        "insecure: true\napi_insecure: true\n")
    (tmp_path / "agent.yaml").write_text(
        f"host: node1\nserver: 127.0.0.1:{agents}\nstate_dir: {tmp_path}/state\n"
        "accel: tcg\nqemu: /usr/bin/qemu-system-x86_64\nvms: []\ninsecure: true\n")
    return {"agents": agents, "api": api, "dir": tmp_path}


def binary(name):
    path = os.path.join(build_dir(), "src", name.split("-")[1], name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built")
    return path


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_server_ready_watchdog_from_the_loop_and_stopping(configs, tmp_path):
    notify = Notify(tmp_path)
    srv = start([binary("vcr-server"), "--config", str(tmp_path / "server.yaml")], notify,
                tmp_path, "server")
    try:
        ready = notify.wait_for("READY", 30)
        assert ready["READY"] == "1"
        assert f"HTTP API on port {configs['api']}" in ready.get("STATUS", ""), ready
        # READY means serving: the API port answers now.
        socket.create_connection(("127.0.0.1", configs["api"]), timeout=5).close()
        # WATCHDOG=1 every half interval (150 ms): at least 3 in 1.5 s.
        pings = [m for m in notify.drain(1.5) if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, pings
        # A loop that does not run does not feed the watchdog.
        srv.send_signal(signal.SIGSTOP)
        notify.drain(0.2)  # what was already sent before the stop took effect
        assert notify.drain(1.0) == []
        srv.send_signal(signal.SIGCONT)
        notify.wait_for("WATCHDOG", 5)
        srv.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING", 10)["STOPPING"] == "1"
        assert srv.wait(timeout=20) == 0
    finally:
        stop(srv)
        notify.close()


def test_agent_ready_on_an_abstract_socket_and_watchdog_pid(configs, tmp_path):
    notify = Notify(tmp_path, abstract=True)
    srv = subprocess.Popen([binary("vcr-server"), "--config", str(tmp_path / "server.yaml")],
                           stdin=subprocess.DEVNULL, stdout=open(tmp_path / "srv.log", "w"),
                           stderr=subprocess.STDOUT)
    agent = None
    try:
        agent = start([binary("vcr-agent"), "--config", str(tmp_path / "agent.yaml")], notify,
                      tmp_path, "agent")
        ready = notify.wait_for("READY", 60)
        assert "role host" in ready.get("STATUS", "") and "host node1" in ready["STATUS"], ready
        notify.wait_for("WATCHDOG", 5)
        agent.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", 10)
        assert agent.wait(timeout=30) == 0
        # WATCHDOG_PID naming another process: the watchdog is not ours to feed.
        agent = start([binary("vcr-agent"), "--config", str(tmp_path / "agent.yaml")], notify,
                      tmp_path, "agent2", watchdog_pid=1)
        notify.wait_for("READY", 60)
        assert [m for m in notify.drain(1.0) if "WATCHDOG" in m] == []
    finally:
        if agent is not None:
            stop(agent)
        stop(srv)
        notify.close()
