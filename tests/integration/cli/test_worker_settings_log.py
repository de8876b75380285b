"""A real worker started with secrets in its environment connects with them and logs its
settings without them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.integration


def test_the_worker_start_up_log_shows_its_settings_but_no_secret(stack, unique, tmp_path):
    redis_password = f"pw-planted-{unique}"
    secrets = {
        # The local redis-server lets `default` in with any password: the worker really
        # connects through this URL, password and all.
        "STREAMREC_REDIS__URL": (
            f"redis://default:{redis_password}@{stack.stack.host}:{stack.stack.redis_port}/0"
        ),
        "STREAMREC_LLM__API_KEY": f"sk-planted-{unique}",
        "STREAMREC_CLICKHOUSE__DSN": f"http://app:ch-planted-{unique}@127.0.0.1:8123/",
    }
    visible = {"STREAMREC_KAFKA__CLIENT_ID": f"client-planted-{unique}"}
    env = {**os.environ, **stack.to_env(), **secrets, **visible}
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "streamrec", "worker", "interaction-counter"]
    argv += ["--group", f"t-settings-{unique}", "--loglevel", "info"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        wait_for(
            lambda: "Ready" in log.read_text() or proc.poll() is not None,
            120,
            "the worker to start",
        )
        assert proc.poll() is None, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    # The log does carry the start-up settings, planted values included ...
    assert "worker interaction-counter settings:" in text
    assert f"STREAMREC_KAFKA__CLIENT_ID=client-planted-{unique}" in text
    assert "STREAMREC_REDIS__URL=redis://default:**********@" in text
    assert "STREAMREC_LLM__API_KEY=**********" in text
    # ... but not one secret, anywhere in it.
    for secret in (redis_password, f"sk-planted-{unique}", f"ch-planted-{unique}"):
        assert secret not in text
