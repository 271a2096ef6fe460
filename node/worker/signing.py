"""Which certificates a node trusts to sign its tasks (docs/architecture.md §2.1). Signing itself — the
identity and `enable_signing` — is in node.contract.clients, shared with the coordinator."""

from __future__ import annotations

import glob
import os
from pathlib import Path


class SignerError(ValueError):
    """NODE_TRUSTED_SIGNERS names something other than the coordinator's certificate(s)."""


def check_task_signers(trusted: str, *, party: str, peers: list[str]) -> list[Path]:
    """The certificates a node trusts to sign its tasks: the coordinator's only.

    Refused: a directory (it tends to be the federation's certs folder, where every party's
    certificate lies — any party could then sign tasks for this node), a CA certificate, and a
    certificate of this party or of a peer party. Returns the certificate files."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if os.path.isdir(trusted):
        raise SignerError(
            f"NODE_TRUSTED_SIGNERS is a directory ({trusted}); name the coordinator's "
            "certificate file(s) — a folder of certificates may hold the parties' own"
        )
    files = sorted(Path(p) for p in glob.glob(trusted))
    if not files:
        raise SignerError(f"NODE_TRUSTED_SIGNERS: no certificate matches {trusted}")
    for path in files:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SignerError(
                f"NODE_TRUSTED_SIGNERS: {path} is not a PEM certificate ({exc})"
            ) from None
        cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        cn = str(cns[0]) if cns else ""
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca:
            raise SignerError(
                f"NODE_TRUSTED_SIGNERS: {path} is a CA certificate; name the coordinator's "
                "own certificate"
            )
        if cn == party or cn in peers:
            who = "this party" if cn == party else "peer party"
            raise SignerError(
                f"NODE_TRUSTED_SIGNERS: {path} is the certificate of {who} {cn!r}; only the "
                "coordinator's certificate(s) may sign tasks"
            )
    return files
