"""Debian's redis-server as the online store and cache: own port, dir, log and pid file.

`RedisServer` is the primary, or with `replica_of` a replica of it; `RedisSentinel` is the
same binary in Sentinel mode, watching the primary (`stack.redis_sentinel`).
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

from streamrec.infra import processes, programs, tls
from streamrec.infra.errors import StackError
from streamrec.infra.settings import Settings

PROCESS_MARKER = "redis-server"


class _RedisProcess:
    """What a local redis-server and a Sentinel share: an address, a pid file, a start that
    waits for PING, and a stop."""

    # How a taken port names this process, and the setting that moves it.
    label = "Redis"
    port_variable = processes.STACK_PORT_VARIABLES

    def __init__(self, settings: Settings, name: str, port: int, pid_name: str) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.name = name
        self.port = port
        self.home = settings.state_dir / name
        self.pid_file = self.home / pid_name
        self.log_file = settings.state_dir / "logs" / f"{name}.log"

    @property
    def address(self) -> str:
        return f"{self.stack.host}:{self.port}"

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, PROCESS_MARKER)

    def start(self) -> bool:
        if self.pid() is not None:
            return False
        binary = programs.require(self.stack.redis_server, "redis-server")
        processes.ensure_ports_free(self.stack.host, {self.label: self.port}, self.port_variable)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv(binary)
        proc = processes.spawn(argv, self.log_file.with_suffix(".out"), self.pid_file)
        processes.wait_until(
            self.ping,
            what=self.name,
            timeout_s=self.stack.start_timeout_s,
            log_file=self.log_file,
            alive=lambda: proc.poll() is None,
        )
        return True

    def _argv(self, binary: str) -> list[str]:
        """The command line (after writing any file it names)."""
        raise NotImplementedError

    def ping(self) -> bool:
        if not processes.port_in_use(self.stack.host, self.port):
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _client(self) -> redis.Redis:
        return redis.Redis(
            host=self.stack.host, port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        processes.stop(pid, self.pid_file, timeout_s=15)
        return True


class RedisServer(_RedisProcess):
    """Owns one local redis-server process and its data directory: the primary, or a replica
    of the primary (`replica_of`, its port)."""

    def __init__(
        self,
        settings: Settings,
        name: str = "redis",
        port: int | None = None,
        replica_of: int | None = None,
    ) -> None:
        super().__init__(
            settings, name, settings.stack.redis_port if port is None else port, f"{name}.pid"
        )
        self.replica_of = replica_of
        if replica_of is not None:
            self.label = "Redis replica"
            self.port_variable = "STREAMREC_STACK__REDIS_REPLICA_PORT"

    def _argv(self, binary: str) -> list[str]:
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
        if self.replica_of is not None:
            argv += ["--replicaof", self.stack.host, str(self.replica_of)]
        return argv

    def _write_secure_config(self) -> Path:
        """The port (plain or TLS) and the users, from the Redis settings."""
        r = self.settings.redis
        port = str(self.port)
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

    def _client(self) -> redis.Redis:
        """PING as the configured user (over TLS if set)."""
        url = self.settings.local_redis_url.replace(
            f":{self.stack.redis_port}/", f":{self.port}/", 1
        )
        return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


class RedisSentinel(_RedisProcess):
    """One local redis-server in Sentinel mode, monitoring the primary as
    `redis.sentinel_master`. A majority of the Sentinels (2 of 3) must agree that the primary
    is down, for `stack.redis_down_after_ms`, before one of them promotes the replica."""

    port_variable = "STREAMREC_STACK__REDIS_SENTINEL_PORTS"

    def __init__(self, settings: Settings, index: int, port: int) -> None:
        super().__init__(settings, f"redis-sentinel-{index}", port, "sentinel.pid")
        self.label = f"Redis Sentinel {index}"

    def _argv(self, binary: str) -> list[str]:
        master = self.settings.redis.sentinel_master
        quorum = len(self.stack.redis_sentinel_ports) // 2 + 1
        down_ms = self.stack.redis_down_after_ms
        # Sentinel rewrites this file as it learns (a failover, its peers). It starts from the
        # configured roles each time, as `up` starts the primary and the replica: a Sentinel
        # restarted beside peers that saw a failover takes their newer configuration.
        conf = self.home / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\n"
            f"bind {self.stack.host}\n"
            f"dir {self.home}\n"
            f"sentinel monitor {master} {self.stack.host} {self.stack.redis_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_ms}\n"
            f"sentinel failover-timeout {master} {max(3000, 4 * down_ms)}\n"
            f"sentinel parallel-syncs {master} 1\n"
        )
        return [binary, str(conf), "--sentinel", "--logfile", str(self.log_file)]


def sentinel_parts(settings: Settings) -> list[RedisServer | RedisSentinel]:
    """The replica and the Sentinels `up` starts beside the primary (none unless
    `stack.redis_sentinel`). Sentinel mode is plain TCP without passwords: the replica and the
    Sentinels would need the primary's credentials and CA as well."""
    stack = settings.stack
    if not stack.redis_sentinel:
        return []
    r = settings.redis
    if r.tls or r.password.get_secret_value():
        raise StackError(
            "stack.redis_sentinel runs without TLS and passwords; unset STREAMREC_REDIS__TLS "
            "and STREAMREC_REDIS__PASSWORD, or point redis.sentinels at your own Sentinels"
        )
    if len(stack.redis_sentinel_ports) < 3:
        raise StackError("stack.redis_sentinel_ports needs at least 3 ports (a majority decides)")
    replica = RedisServer(
        settings, "redis-replica", stack.redis_replica_port, replica_of=stack.redis_port
    )
    sentinels = [
        RedisSentinel(settings, i, port) for i, port in enumerate(stack.redis_sentinel_ports, 1)
    ]
    return [replica, *sentinels]
