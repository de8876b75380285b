"""The serving socket is bound at start and listened on only once the app is ready, so a
process of a SO_REUSEPORT group that is still starting gets none of the group's connections."""

from __future__ import annotations

import socket

import pytest

from streamrec.infra.processes import free_port
from streamrec.serving.errors import ServingError
from streamrec.serving.runner import bound_socket


def test_a_bound_socket_refuses_connections_until_it_listens():
    port = free_port()
    sock = bound_socket("127.0.0.1", port, reuse_port=False)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        sock.listen(8)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        sock.close()


def test_a_starting_process_of_the_group_is_given_no_connection():
    port = free_port()
    ready = bound_socket("127.0.0.1", port, reuse_port=True)
    starting = bound_socket("127.0.0.1", port, reuse_port=True)
    ready.listen(64)
    ready.settimeout(2)
    clients = []
    try:
        # Connections from many source ports: the kernel would hash about half of them to a
        # second listening socket.
        for _ in range(32):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            ready.accept()[0].close()
    finally:
        for c in clients:
            c.close()
        ready.close()
        starting.close()


def test_a_port_taken_by_another_server_is_a_clear_error():
    port = free_port()
    other = socket.create_server(("127.0.0.1", port))
    try:
        with pytest.raises(ServingError, match=f"cannot listen on 127.0.0.1:{port}"):
            bound_socket("127.0.0.1", port, reuse_port=True)
    finally:
        other.close()
