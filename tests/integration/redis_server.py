"""A real redis-server on a free loopback port, in a temporary folder, that tests can stop, kill and restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis

from maddpg.launch import free_tcp_port

_FILLER_DELAY_US = 10_000  # per filler key while loading (redis' debug option key-load-delay)


class RedisServer:
    """Args:
      folder: where its AOF files go. persistent: appendonly with appendfsync always (what Redis acknowledged
      survives a SIGKILL, as a durable deployment would); False: no persistence at all, so a restart comes
      back empty. password: the default user's password (`--requirepass`). users: extra ACL users, name to
      password, each allowed everything.
    """

    def __init__(self, folder: Path, *, persistent: bool = True, password: str | None = None,
                 users: dict[str, str] | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
        self.binary, self.folder = binary, Path(folder)
        self.persistent, self.password, self.users = persistent, password, dict(users or {})
        self.port = free_tcp_port()
        self.url = self.url_as(password=password)
        self.proc: subprocess.Popen | None = None
        self._slow_load = False

    def url_as(self, user: str = "", password: str | None = None) -> str:
        """This server's URL with these credentials (percent-encoded, as a URL needs them)."""
        auth = "" if password is None else f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        for name, password in self.users.items():
            args += ["--user", name, "on", f">{password}", "~*", "&*", "+@all"]
        if self._slow_load:
            # Redis answers LOADING between keys only if it looks at its clients that often.
            args += ["--key-load-delay", str(_FILLER_DELAY_US), "--loading-process-events-interval-bytes", "1024"]
        return args

    def start(self, wait: bool = True) -> RedisServer:
        """Starts redis-server; with `wait`, returns once it answers PING (after loading its data)."""
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._slow_load = False
        if wait:
            self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.time() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:  # BusyLoadingError too
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def slow_down_next_load(self, seconds: float) -> None:
        """Makes the next start spend about `seconds` loading, answering LOADING meanwhile: writes filler
        keys and rewrites the AOF so that they sit in its RDB-format base, which key-load-delay slows down."""
        assert self.persistent, "only a persistent server loads anything"
        client = redis.Redis.from_url(self.url)
        with client.pipeline() as pipe:
            for k in range(int(seconds * 1e6 / _FILLER_DELAY_US)):
                pipe.set(f"filler:{k}", b"x" * 2048)
            pipe.execute()
        client.bgrewriteaof()
        while client.info("persistence")["aof_rewrite_in_progress"] or \
                client.info("persistence")["aof_rewrite_scheduled"]:
            time.sleep(0.02)
        self._slow_load = True

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (a crash, or a pod evicted)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
