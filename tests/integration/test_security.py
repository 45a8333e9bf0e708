"""TLS, mutual TLS and bearer tokens, against real servers on loopback."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from certs import make_pki
from conftest import start_server, stop_server
from slatewise_client import SlateClient
from slatewise_client.client import tls_credentials

TOKEN = "s3cret-token-for-tests"
SECRET_TITLE = "Zebra-striped velvet opera cape"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory, pki):
    """Mutual TLS and a bearer token, pointwise path only (fast to start)."""
    tmp = tmp_path_factory.mktemp("secured")
    tokens = tmp / "tokens.txt"
    tokens.write_text(f"# one per line\n{TOKEN}\n")
    server = start_server(
        tmp, "--model", "", "--tls-cert-file", str(pki["server_cert"]), "--tls-key-file",
        str(pki["server_key"]), "--tls-client-ca-file", str(pki["ca"]), "--auth-tokens-file", str(tokens),
        client_credentials=tls_credentials(str(pki["ca"]), str(pki["client_cert"]), str(pki["client_key"])),
    )
    yield server
    stop_server(server)


def _mtls(pki):
    return tls_credentials(str(pki["ca"]), str(pki["client_cert"]), str(pki["client_key"]))


def test_token_and_client_certificate_are_required(secured_server, pki):
    with SlateClient(secured_server.target, credentials=_mtls(pki), token=TOKEN) as client:
        slate = client.recommend("casual outfit", k=3, candidates=[
            {"id": "secret-1", "title": SECRET_TITLE, "category": "outerwear"},
            {"id": "plain-1", "title": "Plain tee", "category": "tops"},
            {"id": "plain-2", "title": "Plain jeans", "category": "bottoms"}])
        assert len(slate.items) == 3
        assert client.health() == "SERVING"
    with SlateClient(secured_server.target, credentials=_mtls(pki)) as client:
        assert client.health() == "SERVING"  # health is exempt from the token
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("casual outfit", k=3)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            list(client.recommend_stream("casual outfit", k=3))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with SlateClient(secured_server.target, credentials=_mtls(pki), token="wrong") as client:
        with pytest.raises(grpc.RpcError) as err:
            client.catalogue_info()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # TLS without a client certificate: the handshake is refused.
    with SlateClient(secured_server.target, credentials=tls_credentials(str(pki["ca"])), token=TOKEN) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("casual outfit", k=3, deadline=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plaintext to a TLS port fails too.
    with SlateClient(secured_server.target, token=TOKEN) as client:
        with pytest.raises(grpc.RpcError):
            client.recommend("casual outfit", k=3, deadline=5)


def test_cli_speaks_mutual_tls(secured_server, pki):
    out = subprocess.run(
        [sys.executable, "-m", "slatewise_client.cli", "recommend", "--target", secured_server.target,
         "--query", "casual outfit", "-k", "2", "--token", TOKEN, "--tls-ca", str(pki["ca"]),
         "--tls-cert", str(pki["client_cert"]), "--tls-key", str(pki["client_key"])],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_logs_hold_neither_secrets_nor_item_payloads(secured_server):
    log = secured_server.log_path.read_text()
    assert "slate served" in log  # the request log exists ...
    assert TOKEN not in log  # ... but carries no token
    assert SECRET_TITLE not in log  # ... and no item payloads
