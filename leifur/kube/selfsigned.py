"""The metrics port's self-signed certificate, made where cryptography is loaded: in the child
process that leifur.kube.certificate.self_signed starts, which writes the certificate and then
the key, both PEM, to its standard output.

python -m leifur.kube.selfsigned --days DAYS -- NAME...
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def generate(names: Sequence[str], days: int) -> tuple[bytes, bytes]:
    """An ECDSA P-256 key and a certificate for it, valid `days`, for `names` (host names or IP
    addresses; the first is the subject); both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names[0] if names else "") or "leifur")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A little in the past: a client whose clock is slightly behind accepts it too.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leifur.kube.selfsigned", description=__doc__)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("names", nargs="*", help="host names or IP addresses; the first is the subject")
    args = p.parse_args(argv)
    cert, key = generate(args.names, args.days)
    sys.stdout.buffer.write(cert + key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
