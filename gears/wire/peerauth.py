"""Peer authentication: how two gears nodes prove to each other that they belong to one deployment.

Every gears node of a deployment holds the same *peer secret* (32 random bytes, hex in a
file that only the nodes' OS user can read; ``gears cluster up`` generates it). A node
opening a message link to a peer's front door runs a challenge-response handshake on that
connection before it sends any message:

1. the caller sends ``RG.PEERHELLO <nonce_c>``;
2. the peer answers ``[<nonce_p>, proof("peer", nonce_c, nonce_p, address)]``, which the
   caller checks (so it never sends messages to a node that does not hold the secret);
3. the caller sends ``RG.PEERAUTH proof("caller", nonce_c, nonce_p, address)``; the peer
   checks it and marks the connection as a peer connection.

``address`` is the front door address the caller dialled (the peer's announced address),
so a proof obtained by a fake front door (a client can give its connection any name) is
worth nothing at the real one. Nonces are fresh per connection, so a recorded handshake
cannot be replayed. Only a peer connection may send ``RG.INNERMSG``, the only command whose
arguments the node unpickles.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "NONCE_BYTES",
    "PeerAuthError",
    "PeerSecret",
    "SecretFileError",
    "read_secret_file",
    "write_secret_file",
]

#: Length of a handshake nonce in bytes.
NONCE_BYTES = 32
_SECRET_BYTES = 32
_CONTEXT = b"gears-fabric peer v1"


class PeerAuthError(Exception):
    """A peer handshake failed (wrong secret, or not a gears node)."""


class SecretFileError(Exception):
    """A secret file is missing, empty, or readable by other OS users."""


def write_secret_file(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, readable and writable by its owner only (0600).

    The file is created with that mode (never widened by the umask, never world-readable
    for an instant); an existing file is replaced the same way."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def read_secret_file(path: str | Path) -> str:
    """The secret in ``path`` (surrounding whitespace removed).

    Refuses a file that group or others may read or write, as ssh does with keys."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretFileError(f"cannot read secret file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(f"secret file {path} is accessible by other users (mode {mode & 0o777:o}); chmod 600 it")
    if not text:
        raise SecretFileError(f"secret file {path} is empty")
    return text


class PeerSecret:
    """The deployment's peer secret and the handshake proofs made with it."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise SecretFileError("the peer secret is empty")
        self._key = hashlib.sha256(_CONTEXT + secret.encode()).digest()

    @staticmethod
    def generate() -> str:
        """A new random secret (hex text) for a deployment."""
        return secrets.token_hex(_SECRET_BYTES)

    @staticmethod
    def nonce() -> bytes:
        """A fresh handshake nonce."""
        return secrets.token_bytes(NONCE_BYTES)

    def proof(self, role: bytes, caller_nonce: bytes, peer_nonce: bytes, address: str) -> bytes:
        """The proof ``role`` (``b"peer"`` or ``b"caller"``) sends in the handshake."""
        message = b"\0".join((role, caller_nonce, peer_nonce, address.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def check(self, role: bytes, caller_nonce: bytes, peer_nonce: bytes, address: str, proof: bytes) -> None:
        """Raise :class:`PeerAuthError` unless ``proof`` is the right one (constant time)."""
        if len(caller_nonce) != NONCE_BYTES or len(peer_nonce) != NONCE_BYTES:
            raise PeerAuthError("bad handshake nonce")
        if not hmac.compare_digest(self.proof(role, caller_nonce, peer_nonce, address), proof):
            raise PeerAuthError("peer authentication failed (the nodes do not share one peer secret)")
