"""Interop in Grenache's secure mode (mutual TLS) with the real Node packages.

Credentials are made by ``twisted_exchange.pki`` and read by Node from the
files it writes.  (1) A Node PeerRPCClient in secure mode calls our
RPCServer(tls=): served, and our handler sees its identity; a Node client
in plain mode or without a client certificate is refused; Node checks the
IP it dialled against our certificate's IP SANs.  (2) Our RPCClient(tls=)
calls a Node PeerRPCServer in secure mode: Node's handler sees our
certificate, and ``expect`` refuses it when it is not the expected peer.
Skipped without node.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import utils

from tests.interop.test_rpc_interop import INTEROP, InteropTestCase, eventually
from tests.support import LOOPBACK, free_port, spawn
from twisted_exchange.grenache import Caller, GrenacheError, RPCClient, RPCServer
from twisted_exchange.pki import CA, CLIENT, PEER, Identity, save

NODE_PEER, PY_PEER, ALICE = Identity(PEER, "node1"), Identity(PEER, "py1"), Identity(CLIENT, "alice")


class SecureInteropTestCase(InteropTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.pki = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.pki)
        self.ca = CA.create()
        self.ca.save(self.pki)
        self.alice = self.ca.issue(ALICE)
        save(self.pki, ALICE, self.alice)


class NodeSecureClientToOurServerTests(SecureInteropTestCase):
    async def serve(self, key: str, addresses: list[str]) -> list[Any]:
        """Our secure server under ``key``; the payloads its handler saw."""
        seen: list[Any] = []
        def handler(key: str, payload: Any, caller: Caller) -> dict:
            seen.append(payload)
            return {"echo": payload, "caller": str(caller.identity)}
        server = RPCServer(handler, tls=self.ca.issue(PY_PEER, addresses), with_caller=True)
        await server.start()
        self.addCleanup(server.stop)
        await eventually(lambda: self.link(self.grapes[0]).announce(key, server.port))
        await self.found(self.link(self.grapes[1]), key, f"{LOOPBACK}:{server.port}")
        return seen

    async def node_client(self, key: str, *modes: str) -> list[dict]:
        out, err, code = await utils.getProcessOutputAndValue(
            self.node, [str(INTEROP / "secure_rpc_client.js"), self.grapes[1], key,
                        str(self.pki), ALICE.name, *modes], path=str(INTEROP))
        self.assertEqual(code, 0, err)
        return json.loads(out)

    async def test_a_node_client_certificate_is_served_and_plain_or_certless_clients_are_not(
            self) -> None:
        seen = await self.serve("secure_py", [LOOPBACK])
        served, plain, certless = await self.node_client("secure_py", "cert", "plain", "nocert")
        self.assertEqual(served, {"err": None, "data": {"echo": {"mode": "cert"},
                                                       "caller": "client:alice"}})
        self.assertRegex(plain["err"], r"^ERR_REQUEST_GENERIC: .*ERR_TLS_REQUIRED")
        self.assertIn("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", certless["err"])
        self.assertEqual(seen, [{"mode": "cert"}])

    async def test_a_node_client_refuses_a_certificate_without_the_ip_it_dialled(self) -> None:
        seen = await self.serve("secure_py_no_ip", ["py1.example"])
        [refused] = await self.node_client("secure_py_no_ip", "cert")
        self.assertIn(f"IP: {LOOPBACK} is not in the cert's list", refused["err"])
        self.assertEqual(seen, [])


class OurSecureClientToNodeServerTests(SecureInteropTestCase):
    async def test_our_client_calls_a_node_secure_server_that_is_the_expected_peer(self) -> None:
        save(self.pki, NODE_PEER, self.ca.issue(NODE_PEER, [LOOPBACK]))
        port = free_port()
        spawn(self, [self.node, str(INTEROP / "secure_rpc_server.js"), self.grapes[0],
                     "secure_node", str(port), str(self.pki), NODE_PEER.name], cwd=INTEROP)
        dest = f"{LOOPBACK}:{port}"
        link = self.link(self.grapes[1])
        await self.found(link, "secure_node", dest)
        client, plain = RPCClient(link, tls=self.alice), RPCClient(link)
        stranger = RPCClient(link, tls=CA.create().issue(ALICE))
        for each in (client, plain, stranger):
            self.addCleanup(each.close)

        self.assertEqual(await client.request("secure_node", {"msg": "hi"}, expect=NODE_PEER),
                         {"echo": {"msg": "hi"},
                          "caller": "URI:twisted-exchange:client:alice"})
        for call, code in ((client.request("secure_node", 1, retry=0, expect=PY_PEER),
                            "ERR_TLS_IDENTITY"),
                           (plain.request("secure_node", 1, retry=0), "ERR_REQUEST_GENERIC"),
                           (stranger.request("secure_node", 1, retry=0), "ERR_REQUEST_GENERIC")):
            with self.assertRaises(GrenacheError) as caught:
                await call
            self.assertEqual(caught.exception.code, code, caught.exception)
