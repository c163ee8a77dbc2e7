"""The cluster PKI: issuing, saving, loading and verifying identities."""
from __future__ import annotations

import datetime
import shutil
import stat
import tempfile
import unittest
from pathlib import Path

from cryptography import x509

from twisted_exchange.pki import (
    CA, CLIENT, PEER, CertificateError, Identity, ensure, identity_of, load, paths, save, verify)

PEER1 = Identity(PEER, "peer1")
ALICE = Identity(CLIENT, "alice")


def certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


class IdentityTests(unittest.TestCase):
    def test_identity_is_a_uri_with_kind_and_name(self) -> None:
        self.assertEqual(PEER1.uri, "twisted-exchange:peer:peer1")
        self.assertEqual(str(ALICE), "client:alice")

    def test_unknown_kinds_and_names_that_could_be_ambiguous_are_refused(self) -> None:
        for kind, name in (("admin", "x"), (PEER, ""), (PEER, "a:b"), (PEER, "../x"),
                           (CLIENT, ".hidden"), (CLIENT, "x" * 65)):
            with self.assertRaises(ValueError, msg=(kind, name)):
                Identity(kind, name)


class IssueTests(unittest.TestCase):
    ca = CA.create()  # one for the class (trial has no setUpClass)

    def test_a_peer_certificate_names_the_peer_and_verifies_against_the_ca(self) -> None:
        peer = certificate(self.ca.issue(PEER1, ["127.0.0.1", "peer1.example"]).cert)
        self.assertEqual(identity_of(peer), PEER1)
        self.assertEqual(verify(peer, self.ca.certificate), PEER1)

    def test_a_client_certificate_names_the_client_and_verifies_against_the_ca(self) -> None:
        self.assertEqual(verify(certificate(self.ca.issue(ALICE).cert), self.ca.certificate),
                         ALICE)

    def test_peer_certificates_serve_and_call_while_client_certificates_only_call(self) -> None:
        def usages(identity: Identity) -> set[str]:
            cert = certificate(self.ca.issue(identity).cert)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            return {oid.dotted_string for oid in eku}
        self.assertEqual(usages(PEER1), {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"})
        self.assertEqual(usages(ALICE), {"1.3.6.1.5.5.7.3.2"})

    def test_served_addresses_are_ip_and_dns_alternative_names(self) -> None:
        cert = certificate(self.ca.issue(PEER1, ["127.0.0.1", "::1", "peer1.example"]).cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual([str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
                         ["127.0.0.1", "::1"])
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["peer1.example"])

    def test_a_certificate_from_another_ca_does_not_verify(self) -> None:
        stranger = certificate(CA.create().issue(PEER1).cert)
        self.assertEqual(identity_of(stranger), PEER1)  # it claims the identity...
        with self.assertRaises(CertificateError):  # ...but does not prove it
            verify(stranger, self.ca.certificate)

    def test_an_expired_certificate_does_not_verify(self) -> None:
        issued = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
        old = certificate(self.ca.issue(PEER1, valid_for=datetime.timedelta(days=1),
                                        now=issued).cert)
        with self.assertRaisesRegex(CertificateError, "expired"):
            verify(old, self.ca.certificate)

    def test_a_certificate_is_not_valid_before_its_start_less_clock_skew(self) -> None:
        start = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        future = certificate(self.ca.issue(PEER1, now=start).cert)
        with self.assertRaisesRegex(CertificateError, "not valid before"):
            verify(future, self.ca.certificate)
        self.assertEqual(verify(future, self.ca.certificate,
                                now=start - datetime.timedelta(minutes=4)), PEER1)

    def test_a_certificate_without_an_identity_names_nobody(self) -> None:
        self.assertIsNone(identity_of(self.ca.certificate))
        with self.assertRaises(CertificateError):
            verify(self.ca.certificate, self.ca.certificate)


class FilesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)

    def test_a_saved_credential_loads_back_unchanged(self) -> None:
        ca = CA.create()
        credential = ca.issue(PEER1, ["127.0.0.1"])
        save(self.directory / "pki", PEER1, credential)
        self.assertEqual(load(self.directory / "pki", PEER1), credential)

    def test_every_file_is_written_0600_in_a_0700_directory(self) -> None:
        ca = CA.create()
        ca.save(self.directory / "pki")
        files = save(self.directory / "pki", ALICE, ca.issue(ALICE))
        def mode(path: Path) -> int:
            return stat.S_IMODE(path.stat().st_mode)
        self.assertEqual(mode(self.directory / "pki"), 0o700)
        self.assertEqual((mode(files["key"]), mode(self.directory / "pki" / "ca.key")),
                         (0o600, 0o600))
        self.assertEqual((mode(files["cert"]), mode(files["ca"])), (0o600, 0o600))
        self.assertEqual(files, paths(self.directory / "pki", ALICE))

    def test_a_saved_ca_loads_back_and_issues_certificates_that_verify(self) -> None:
        ca = CA.create()
        ca.save(self.directory)
        again = CA.load(self.directory)
        self.assertEqual(again.certificate, ca.certificate)
        self.assertEqual(verify(certificate(again.issue(ALICE).cert), ca.certificate), ALICE)

    def test_ensure_makes_the_ca_once_and_each_credential_once(self) -> None:
        alice = ensure(self.directory, ALICE)
        ca_before = (self.directory / "ca.crt").read_bytes()
        cert_before = alice["cert"].read_bytes()
        self.assertEqual(ensure(self.directory, ALICE), alice)
        self.assertEqual(((self.directory / "ca.crt").read_bytes(), alice["cert"].read_bytes()),
                         (ca_before, cert_before))
        peer = ensure(self.directory, PEER1, ["127.0.0.1"])
        for identity, files in ((ALICE, alice), (PEER1, peer)):
            self.assertEqual(verify(certificate(files["cert"].read_bytes()), certificate(ca_before)), identity)

    def test_ensure_never_makes_a_second_ca_where_only_the_ca_certificate_is(self) -> None:
        ca = CA.create()
        save(self.directory, PEER1, ca.issue(PEER1))   # a machine that does not issue
        self.assertEqual(ensure(self.directory, PEER1), paths(self.directory, PEER1))
        with self.assertRaisesRegex(CertificateError, "no ca.key to issue one"):
            ensure(self.directory, ALICE)
        self.assertEqual(certificate((self.directory / "ca.crt").read_bytes()), ca.certificate)
