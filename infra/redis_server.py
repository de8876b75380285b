"""Debian's redis-server as the online store and cache: own port, dir, log and pid file."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from streamrec.infra import processes, programs, tls
from streamrec.infra.errors import StackError
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
        # Credentials and TLS go in a 0600 file rather than argv, which `ps` shows anyone.
        argv = [
            binary,
            str(self._write_secure_config()),
            "--bind",
            self.stack.host,
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

    def _write_secure_config(self) -> Path:
        """The port (plain or TLS) and the users, from the Redis settings."""
        r = self.settings.redis
        port = str(self.stack.redis_port)
        lines = [f"port {port}"]
        if r.tls:
            pair = tls.ensure_server(self.settings.tls_dir, "redis", [self.stack.host, "localhost"])
            lines = [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {pair.cert}",
                f"tls-key-file {pair.key}",
                f"tls-ca-cert-file {self.settings.tls_dir / 'ca.pem'}",
                "tls-auth-clients no",
            ]
        password = r.password.get_secret_value()
        if password and any(c.isspace() or c in "\"'" for c in password):
            raise StackError("STREAMREC_REDIS__PASSWORD may not contain spaces or quotes")
        if password and r.username:
            # The ACL user gets every command and key; the passwordless default user is off.
            lines += ["user default off", f"user {r.username} on >{password} ~* &* +@all"]
        elif password:
            lines.append(f"requirepass {password}")
        path = self.home / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{line}\n" for line in lines))
        return path

    def ping(self) -> bool:
        """True when the server answers PING as the configured user (over TLS if set)."""
        if not processes.port_in_use(self.stack.host, self.stack.redis_port):
            return False
        client = redis.Redis.from_url(
            self.settings.local_redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
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
