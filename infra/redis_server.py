"""Debian's redis-server as the online store and cache: own port, dir, log and pid file."""

from __future__ import annotations

import redis

from streamrec.infra import processes, programs
from streamrec.infra.settings import Settings

PROCESS_MARKER = "redis-server"


class RedisServer:
    """Owns the local redis-server process and its data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.home = settings.state_dir / "redis"
        self.pid_file = self.home / "redis.pid"
        self.log_file = settings.state_dir / "logs" / "redis.log"

    @property
    def address(self) -> str:
        return f"{self.stack.host}:{self.stack.redis_port}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, PROCESS_MARKER)

    def start(self) -> bool:
        if self.pid() is not None:
            return False
        binary = programs.require(self.stack.redis_server, "redis-server")
        processes.ensure_ports_free(self.stack.host, {"Redis": self.stack.redis_port})
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--bind",
            self.stack.host,
            "--port",
            str(self.stack.redis_port),
            "--dir",
            str(self.home),
            "--logfile",
            str(self.log_file),
            "--daemonize",
            "no",
            # Snapshots keep the online store across restarts; features are rebuildable anyway.
            "--save",
            "300 1000",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        proc = processes.spawn(argv, self.log_file.with_suffix(".out"), self.pid_file)
        processes.wait_until(
            self.ping,
            what="redis-server",
            timeout_s=self.stack.start_timeout_s,
            log_file=self.log_file,
            alive=lambda: proc.poll() is None,
        )
        return True

    def ping(self) -> bool:
        client = redis.Redis(
            host=self.stack.host,
            port=self.stack.redis_port,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        processes.stop(pid, self.pid_file, timeout_s=15)
        return True
