"""The cross-silo link (RayFed over gRPC + mTLS), hardened at this party's receiving end.

RayFed's own receiver accepts a message from any holder of a federation certificate, for any
sequence ids, of any size, keeps all of them in memory, and unpickles a message with whatever
classes it names once the job asks for it. A peer is another organisation, so the receiver this
node runs (`GuardedGrpcReceiverProxy`, installed into RayFed by `install()` in the job process
before `sf.init`) takes a message only when

  - the sender's certificate names a party of this job (not this party, not a stranger);
  - it is at most `MAX_MESSAGE_BYTES`, and the messages held from its sender stay within
    `MAX_PENDING_MESSAGES` / `MAX_PENDING_BYTES` (a budget per peer: messages one peer sends for
    ids the job never reads cannot crowd out another peer's);
  - its opcodes pass `node.sfjob.pickle_check` with the allow-list `ALLOWED_GLOBALS` (exception
    classes only): no global outside it, no set, no dict key but a string, at most
    `pickle_check.MAX_OPCODES` opcodes — so unpickling it costs in proportion to its size, and a
    payload naming `builtins.exec`, or a 30-byte `bytearray(2**31)`, is refused on arrival. The
    check reads the opcodes without running them, in a thread of its own (`CHECK_THREADS`), not
    on the receiver's event loop;
  - it does not overwrite a message already held.

Anything else is answered with an error code and logged on `partyline.security`. The same
allow-list is RayFed's `serializing_allowed_list`, used when the job reads a message. The server
binds the configured listen host (`NODE_FED_LISTEN_HOST`), not `[::]`.

A PSI itself sends nothing over this link (each party reads its own SPU report locally, and the
SPU link is brpc, not pickle): what crosses is RayFed's start-up ping and, on a failure, its
error report — hence a short allow-list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from typing import Any

from node.sfjob import pickle_check

security_log = logging.getLogger("partyline.security")

# classes only, and only classes whose construction costs what its arguments cost: no set,
# frozenset, bytearray, range … (a tiny argument would build gigabytes)
ALLOWED_GLOBALS: dict[str, list[str]] = {
    "builtins": [
        "Exception", "RuntimeError", "ValueError", "TypeError", "KeyError", "IndexError",
        "AssertionError", "TimeoutError", "ConnectionError", "OSError", "NotImplementedError",
    ],
    "fed.exceptions": ["FedRemoteError"],
}  # fmt: skip
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_PENDING_MESSAGES = 256  # held from one peer
MAX_PENDING_BYTES = 64 * 1024 * 1024  # held from one peer
MAX_CONCURRENT_RPCS = 8  # messages being received or checked at once (≤ 8 × 16 MiB)
CHECK_THREADS = 1
PEERS_KEY = "partyline_peers"  # our keys in cross_silo_comm_options (RayFed ignores them)
JOB_KEY = "partyline_job_name"
REVOKED_KEY = "partyline_revoked"  # hex serials of revoked certificates (NODE_CRL_FILE)
PROXY_MAX_CONCURRENCY = 32  # calls the one proxy actor serves at once (waiting get_data + send)


def payload_problem(data: bytes) -> str | None:
    """Why a peer's message may not be taken (None: it is acceptable)."""
    try:
        pickle_check.check(data, ALLOWED_GLOBALS)
    except pickle_check.Refused as exc:
        return str(exc)
    return None


_checks = concurrent.futures.ThreadPoolExecutor(CHECK_THREADS, "fedlink-check")


def comm_options(
    peers: list[str], job_name: str = "", revoked: frozenset[int] = frozenset()
) -> dict[str, Any]:
    """What the job passes to sf.init as cross_silo_comm_options (besides its own timeouts)."""
    return {
        REVOKED_KEY: sorted(format(s, "x") for s in revoked),
        "serializing_allowed_list": {m: list(n) for m, n in ALLOWED_GLOBALS.items()},
        "messages_max_size_in_bytes": MAX_MESSAGE_BYTES,
        "max_concurrency": PROXY_MAX_CONCURRENCY,
        PEERS_KEY: sorted(peers),
        JOB_KEY: job_name,
    }


def install() -> None:
    """Make RayFed start this node's link — one actor holding RayFed's gRPC sender and the
    guarded receiver — when SecretFlow calls fed.init (call before sf.init, in the job).

    SecretFlow's production mode starts RayFed's two proxy actors for the gRPC backend (each a
    Ray worker of ≈160 MB); RayFed can run one `SenderReceiverProxy` instead, which SecretFlow
    asks for only for its brpc backend. The wrapper passes ours when none is given.
    """
    import fed

    original = getattr(fed.init, "__wrapped__", fed.init)

    @functools.wraps(original)
    def init(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("receiver_sender_proxy_cls") is None:
            kwargs["receiver_sender_proxy_cls"] = GuardedGrpcSenderReceiverProxy
        return original(*args, **kwargs)

    fed.init = init  # read by SecretFlow's RayProdStrategy at call time


def _peer_cn(context: Any) -> str | None:
    try:
        names = context.auth_context().get("x509_common_name") or []
    except Exception:
        return None
    return names[0].decode() if names else None


def _peer_serial(context: Any) -> int | None:
    """The serial of the certificate the peer presented (None: cannot tell)."""
    from cryptography import x509

    try:
        pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
        return x509.load_pem_x509_certificate(pem).serial_number
    except Exception:
        return None


def _make_classes():
    from fed.proxy.base_proxy import SenderReceiverProxy
    from fed.proxy.grpc import grpc_proxy
    from fed.proxy.grpc.grpc_proxy import fed_pb2, fed_pb2_grpc

    class GuardedSendDataService(grpc_proxy.SendDataService):
        def __init__(self, events, all_data, party, lock, job_name, peers, revoked=()):
            super().__init__(events, all_data, party, lock, job_name)
            self._peers = frozenset(peers)
            self._revoked = frozenset(int(s, 16) for s in revoked)
            self._senders: dict[tuple[str, str], tuple[str, int]] = {}  # key → (peer, bytes)
            self._checking: dict[tuple[str, str], tuple[str, int]] = {}  # being checked

        def _held_from(self, peer: str) -> tuple[int, int]:
            """(messages, bytes) held from `peer` and not yet read by the job (under the lock)."""
            for key in [k for k in self._senders if k[1] not in self._all_data.get(k[0], {})]:
                del self._senders[key]  # read by the job since
            held = [*self._senders.values(), *self._checking.values()]
            sizes = [n for p, n in held if p == peer]
            return len(sizes), sum(sizes)

        def _refuse(self, code: int, peer: str | None, why: str):
            security_log.warning(
                "party %s refused a cross-silo message from %s: %s",
                self._party,
                peer or "an unnamed peer",
                why,
            )
            return fed_pb2.SendDataResponse(code=code, result=f"refused by {self._party}: {why}")

        async def SendData(self, request, context):
            peer = _peer_cn(context)
            if peer is None or peer not in self._peers:
                return self._refuse(403, peer, "the sender is not a party of this job")
            if self._revoked and _peer_serial(context) in self._revoked | {None}:
                return self._refuse(403, peer, "the sender's certificate is revoked (CRL)")
            size = len(request.data)
            if size > MAX_MESSAGE_BYTES:
                return self._refuse(413, peer, f"{size} bytes > {MAX_MESSAGE_BYTES}")
            key = (request.upstream_seq_id, request.downstream_seq_id)
            with self._lock:  # the key is claimed before the check: no two copies race
                why = self._claim(key, peer, size)
            if why:
                return self._refuse(*why)
            problem: str | None = "the check did not finish"
            try:
                loop = asyncio.get_running_loop()
                problem = await loop.run_in_executor(_checks, payload_problem, request.data)
            finally:
                with self._lock:
                    claimed = self._checking.pop(key, None)
                    if claimed is not None and not problem:
                        self._senders[key] = claimed
            if problem:
                return self._refuse(403, peer, problem)
            return await super().SendData(request, context)

        def _claim(self, key: tuple[str, str], peer: str, size: int) -> tuple | None:
            """(code, peer, why) to refuse the message with; else it is claimed (held lock)."""
            if key != ("ping", "ping") and (
                key[1] in self._all_data.get(key[0], {}) or key in self._checking
            ):
                return 409, peer, f"message {key} is already held"
            count, held = self._held_from(peer)
            if count >= MAX_PENDING_MESSAGES or held + size > MAX_PENDING_BYTES:
                return 429, peer, "too many messages held from this party"
            self._checking[key] = (peer, size)
            return None

    class GuardedGrpcReceiverProxy(grpc_proxy.GrpcReceiverProxy):
        def __init__(self, listen_addr, party, job_name, tls_config, proxy_config):
            super().__init__(listen_addr, party, job_name, tls_config, proxy_config)
            self._peers = [p for p in (proxy_config or {}).get(PEERS_KEY, []) if p != party]
            self._revoked = list((proxy_config or {}).get(REVOKED_KEY, []))

        async def start(self):
            host, _, port = self._listen_addr.rpartition(":")
            try:
                await self._serve(host or "0.0.0.0", port)
            except RuntimeError as err:
                self._server_ready_future.set_result((False, f"{err}"))

        async def _serve(self, host: str, port: str) -> None:
            import grpc
            from fed import utils as fed_utils

            server = grpc.aio.server(
                options=fed_utils.dict2tuple(self._grpc_options),
                maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
            )
            fed_pb2_grpc.add_GrpcServiceServicer_to_server(
                GuardedSendDataService(
                    self._events, self._all_data, self._party, self._lock, self._job_name,
                    self._peers, self._revoked,
                ),
                server,
            )  # fmt: skip
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            ca, key, chain = fed_utils.load_cert_config(self._tls_config)
            creds = grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=ca, require_client_auth=True
            )
            if not server.add_secure_port(address, creds):  # 0: could not bind
                raise RuntimeError(f"Failed to bind to address {address}")
            self.server = server
            await server.start()
            self._server_ready_future.set_result((True, f"listening on {address} (mTLS)"))
            await server.wait_for_termination()

    class GuardedGrpcSenderReceiverProxy(SenderReceiverProxy):
        """RayFed's gRPC sender and the guarded receiver in one proxy actor.

        RayFed's `SenderReceiverProxyActor` calls these methods synchronously (from up to
        `max_concurrency` threads); the gRPC server and channels are asyncio, so they run on an
        event loop of their own in a thread of the actor, and each call waits for its coroutine.
        """

        def __init__(self, addresses, self_party, tls_config, proxy_config=None):
            super().__init__(addresses, self_party, tls_config, proxy_config)
            config = dict(proxy_config or {})
            job_name = config.get(JOB_KEY) or ""
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="fedlink-loop", daemon=True
            )
            self._thread.start()

            async def make():  # the receiver's futures and events belong to the loop
                receiver = GuardedGrpcReceiverProxy(
                    addresses[self_party], self_party, job_name, tls_config, config
                )
                sender = grpc_proxy.GrpcSenderProxy(
                    addresses, self_party, job_name, tls_config, config
                )
                return receiver, sender

            self._receiver, self._sender = self._wait(make())

        def _wait(self, coro):
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

        def start(self):
            asyncio.run_coroutine_threadsafe(self._receiver.start(), self._loop)  # serves on

        def is_ready(self):
            return self._wait(self._receiver.is_ready())

        def get_data(self, src_party, upstream_seq_id, curr_seq_id):
            return self._wait(self._receiver.get_data(src_party, upstream_seq_id, curr_seq_id))

        def send(self, dest_party, data, upstream_seq_id, downstream_seq_id):
            return self._wait(
                self._sender.send(dest_party, data, upstream_seq_id, downstream_seq_id)
            )

        def get_proxy_config(self, dest_party=None):
            return self._wait(self._sender.get_proxy_config(dest_party))

        def stop(self):
            if not self._loop.is_running():  # stopped already
                return
            server = getattr(self._receiver, "server", None)
            if server is not None:
                self._wait(server.stop(None))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    return GuardedSendDataService, GuardedGrpcReceiverProxy, GuardedGrpcSenderReceiverProxy


try:
    GuardedSendDataService, GuardedGrpcReceiverProxy, GuardedGrpcSenderReceiverProxy = (
        _make_classes()
    )
    for _cls in (  # pickled by reference
        GuardedSendDataService,
        GuardedGrpcReceiverProxy,
        GuardedGrpcSenderReceiverProxy,
    ):
        _cls.__qualname__ = _cls.__name__
        _cls.__module__ = __name__
except ImportError:  # RayFed not installed (coordinator-only environments): nothing to guard
    pass
