"""Celery message signing (DESIGN §6): the coordinator signs every task with its certificate;
a worker accepts only tasks signed by a certificate in its trusted store.

Celery's `auth` serializer is process-global (one key/cert/store per process).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SigningConfig:
    key_file: Path
    cert_file: Path
    trusted: str  # a certificate file, a directory of them, or a glob

    def check(self) -> None:
        for what, path in (("signing key", self.key_file), ("signing certificate", self.cert_file)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{what} {path} does not exist")
        pattern = os.path.join(self.trusted, "*") if os.path.isdir(self.trusted) else self.trusted
        if not glob.glob(str(pattern)):
            raise FileNotFoundError(f"no trusted certificate matches {self.trusted}")


def enable_signing(app, cfg: SigningConfig) -> None:
    """Make `app` sign what it sends and accept only signed task/control messages."""
    cfg.check()
    app.conf.update(
        task_serializer="auth",
        accept_content=["auth"],
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        security_key=str(cfg.key_file),
        security_certificate=str(cfg.cert_file),
        security_cert_store=str(cfg.trusted),
        security_digest="sha256",
    )
    app.setup_security(
        allowed_serializers=["json"],  # "auth" is registered by setup_security itself
        key=str(cfg.key_file),
        cert=str(cfg.cert_file),
        store=str(cfg.trusted),
        digest="sha256",
        serializer="json",
    )
