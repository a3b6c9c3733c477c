"""The Python client against a real snow-fox node: the binary in
$SF_NODE_BIN, else the repository's target/release (or target/debug)."""

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from snow_fox_client import Client, NodeError

ROOT = pathlib.Path(__file__).resolve().parents[3]


def node_binary():
    if os.environ.get("SF_NODE_BIN"):
        return os.environ["SF_NODE_BIN"]
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "snow-fox"
        if candidate.exists():
            return str(candidate)
    raise unittest.SkipTest("no snow-fox binary: run cargo build first")


def wait_for(what, check, limit=20.0):
    """Polls `check` until it returns something true; fails at the limit."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class NodeTest(unittest.TestCase):
    def setUp(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sf-python-"))
        conf = self.dir / "conf"
        (conf / "services").mkdir(parents=True)
        self.socket = self.dir / "sf.sock"
        (conf / "node.toml").write_text(
            f'name = "py-node"\nsocket = "{self.socket}"\n'
            f'state_dir = "{self.dir / "state"}"\nlog_dir = "{self.dir / "log"}"\n'
        )
        (conf / "services" / "echo.toml").write_text(
            'command = ["/bin/sh", "-c", "echo hello from echo; echo on stderr >&2; exec sleep 300"]\n'
            "autostart = false\n"
        )
        (conf / "services" / "sleeper.toml").write_text('command = ["/bin/sleep", "300"]\n')
        self.log = open(self.dir / "node.log", "wb")
        self.node = subprocess.Popen(
            [node_binary(), "--conf", str(conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        wait_for("the node's socket", self._answers)

    def _answers(self):
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket))
            return True
        except OSError:
            return False

    def tearDown(self):
        try:
            with Client.connect(str(self.socket), timeout=5) as client:
                client.stop("echo")
                client.stop("sleeper")
        except (OSError, NodeError):
            pass
        self.node.terminate()
        self.node.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        return Client.connect(str(self.socket))

    def test_node_info_names_the_node_and_is_green(self):
        with self.client() as client:
            info = wait_for("green", lambda: (lambda i: i if i.overall.colour == 0 else None)(client.node_info()))
            self.assertEqual(info.node.name, "py-node")
            detailed = client.node_info(details=True)
            self.assertIn("spawner", [sub.name for sub in detailed.details])

    def test_start_stop_restart_and_status(self):
        with self.client() as client:
            started = client.start("echo")
            self.assertEqual(started.services[0].instances[0].state, "running")
            pid = started.services[0].instances[0].pid
            restarted = client.restart("echo")
            self.assertNotEqual(restarted.services[0].instances[0].pid, pid)
            stopped = client.stop("echo")
            self.assertEqual(stopped.services[0].instances[0].state, "stopped")
            everything = client.status()
            self.assertEqual(sorted(s.id for s in everything.services), ["echo", "sleeper"])
            with self.assertRaises(NodeError) as refused:
                client.status("ghost")
            self.assertEqual(refused.exception.kind, "UNKNOWN_SERVICE")

    def test_watch_sees_a_start(self):
        with self.client() as watcher, self.client() as actor:
            events = watcher.watch()
            actor.start("echo")
            states = set()
            while "running" not in states:
                event = next(events)
                if event.service_id == "echo":
                    states.add(event.state)

    def test_logs_come_from_the_node_and_follow(self):
        with self.client() as client:
            client.start("echo")
            lines = wait_for("both lines", lambda: (lambda got: got if len(got) >= 2 else None)(list(client.logs(["echo"]))))
            self.assertEqual(sorted(line.text for line in lines), ["hello from echo", "on stderr"])
            only_stdout = list(client.logs(["echo"], stream="stdout"))
            self.assertEqual([line.text for line in only_stdout], ["hello from echo"])
            last = list(client.logs(["echo"], lines=1))
            self.assertEqual(len(last), 1)
        with self.client() as follower, self.client() as actor:
            followed = follower.logs(["echo"], follow=True, since_unix_us=lines[-1].at_unix_us + 1)
            actor.restart("echo")
            seen = [next(followed).text for _ in range(2)]
            self.assertEqual(sorted(seen), ["hello from echo", "on stderr"])


if __name__ == "__main__":
    unittest.main()
