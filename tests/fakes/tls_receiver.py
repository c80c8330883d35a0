"""A loopback TLS listener with a self-signed certificate, recording the SNI name each client
asks for. No client trusts its certificate, so it shows two things about a client: which name
it sent (SNI) and that it verified the certificate (it gives up after the handshake).

    with TlsListener(names=["hooks.partner.test"]) as tls:
        tls.port, tls.server_names   # ["hooks.partner.test", ...]

A client given `tls.ca_path` as its CA bundle trusts it. `handshake_delay` holds each
handshake back that long; `reply` (raw HTTP) is then sent a byte every `drip_seconds`.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(names: list[str], directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TlsListener:
    def __init__(
        self,
        *,
        names: list[str],
        handshake_delay: float = 0.0,
        reply: bytes | None = None,
        drip_seconds: float = 0.0,
    ):
        self.server_names: list[str | None] = []
        self.handshake_delay, self.reply, self.drip_seconds = handshake_delay, reply, drip_seconds
        self._dir = tempfile.TemporaryDirectory()
        cert, key = _self_signed(names, Path(self._dir.name))
        self.ca_path = str(cert)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            if self._stop.wait(self.handshake_delay):
                return
            with self._context.wrap_socket(conn, server_side=True) as tls:
                _read_request(tls)  # all of it: closing on unread bytes would reset the connection
                for n in range(len(self.reply or b"")):
                    if self._stop.wait(self.drip_seconds):
                        return
                    tls.sendall(self.reply[n : n + 1])
        except (OSError, ssl.SSLError):
            pass  # the client refused our certificate, or gave up
        finally:
            conn.close()

    def __enter__(self) -> TlsListener:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
        self._dir.cleanup()


def _read_request(tls: ssl.SSLSocket) -> bytes:
    """An HTTP request's head and its content-length's worth of body (b"" if none came)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
