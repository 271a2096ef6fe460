"""node.contract.clients: the one Redis client factory and the Celery client configuration."""

from __future__ import annotations

import ssl

from node.contract import QUEUES, SECRETFLOW_QUEUE, TASK_EXECUTE
from node.contract.clients import celery_config, client_app, redis_client


def _conn_kwargs(client) -> dict:
    return client.connection_pool.connection_kwargs


def test_a_tls_url_verifies_the_server_against_the_federation_ca(tmp_path):
    ca = tmp_path / "ca.crt"
    kw = _conn_kwargs(redis_client("rediss://node:pw@10.0.0.5:6380/0", ca, socket_timeout=3))
    assert kw["ssl_ca_certs"] == str(ca)
    assert kw["ssl_cert_reqs"] == "required"
    assert kw["socket_timeout"] == 3 and kw["password"] == "pw" and kw["username"] == "node"


def test_a_plain_url_on_loopback_ignores_the_ca_instead_of_failing(tmp_path):
    kw = _conn_kwargs(redis_client("redis://127.0.0.1:6379/0", tmp_path / "ca.crt"))
    assert "ssl_ca_certs" not in kw


def test_celery_clients_route_every_task_to_its_queue_and_verify_tls(tmp_path):
    ca = tmp_path / "ca.crt"
    cfg = celery_config("rediss://h:1/0", "rediss://h:1/0", ca)
    assert cfg["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    assert cfg["redis_backend_use_ssl"] == cfg["broker_use_ssl"]
    assert {q.name for q in cfg["task_queues"]} == set(QUEUES)
    assert cfg["task_routes"][TASK_EXECUTE]["queue"] == SECRETFLOW_QUEUE
    app = client_app("redis://127.0.0.1:1/0")
    assert app.conf.result_backend == "redis://127.0.0.1:1/0"
    assert app.conf.task_serializer == "json"  # unsigned unless a signing identity is given
