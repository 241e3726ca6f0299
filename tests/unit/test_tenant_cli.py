"""`feedserver tenants list|show|add|set|rm` on a memory-mode data directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jwt
import pytest

from feedserver.__main__ import main
from feedserver.keys import KeyRing
from feedserver.store.tenant_file import TENANTS_FILE, TenantFile, parse_tenant_file
from tests.unit.test_config import ATTRIBUTE

SECRET = "c" * 32


@pytest.fixture(autouse=True)
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (*ATTRIBUTE, "FEED_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEED_DATA_DIR", str(tmp_path))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["tenants", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_show_set_and_rm_act_on_the_data_dir(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code, out, _ = run(capsys, "add", "acme", "--history-size", "10")
    assert code == 0
    added = json.loads(out)
    assert (added["id"], added["status"], added["settings"]["historySize"]) == (
        "acme",
        "active",
        10,
    )
    assert run(capsys, "add", "globex")[0] == 0

    code, out, _ = run(capsys, "list")
    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [columns[0] for columns in lines] == ["acme", "globex"]
    assert lines[0][1] == "active" and lines[0][3] == "historySize=10"

    code, out, _ = run(
        capsys, "set", "acme", "--status", "suspended", "--history-size", "default",
        "--max-connections", "5",
    )  # fmt: skip
    changed = json.loads(out)
    assert code == 0 and changed["status"] == "suspended"
    assert (changed["settings"]["historySize"], changed["settings"]["maxConnections"]) == (None, 5)
    assert json.loads(run(capsys, "show", "acme")[1]) == changed

    code, out, _ = run(capsys, "rm", "globex")
    assert (code, out) == (0, "deleted globex\n")
    assert [line.split("\t")[0] for line in run(capsys, "list")[1].splitlines()] == ["acme"]
    stored = json.loads((data_dir / "tenants.json").read_text())
    assert [t["id"] for t in stored["tenants"]] == ["acme"] and stored["deleted"] == ["globex"]


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (("show", "nobody"), 1, "No tenant nobody"),
        (("set", "nobody", "--status", "active"), 1, "No tenant nobody"),
        (("rm", "nobody"), 1, "No tenant nobody"),
        (("add", "Not-An-Id"), 2, "Invalid tenant id"),
        (("add", "acme", "--history-size", "0"), 2, "settings.historySize"),
        (("add", "acme", "--history-size", "ten"), 2, "invalid --history-size: 'ten'"),
        (("set", "acme", "--max-events-per-sec", "-1"), 2, "invalid --max-events-per-sec"),
    ],
)
def test_refusals_are_one_line_with_exit_1_or_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, said: str
) -> None:
    exit_code, out, err = run(capsys, *argv)
    assert (exit_code, out) == (code, "")
    assert err.count("\n") == 1 and err.startswith("feedserver: ") and said in err


def test_adding_an_existing_tenant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    code, _, err = run(capsys, "add", "acme")
    assert code == 1 and "Tenant acme exists" in err


def test_changes_are_refused_while_a_server_holds_the_data_dir_and_reads_are_not(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    server = TenantFile(data_dir)  # what a running memory-mode server holds
    asyncio.run(server.open())
    try:
        for change in (
            ("add", "globex"),
            ("keys", "add", "acme"),
            ("keys", "rm", "acme", "k1"),
            ("revoke-tokens", "acme"),
        ):
            code, _, err = run(capsys, *change)
            assert code == 1 and "is in use by another feedserver process" in err, change
        assert run(capsys, "list")[1].startswith("acme\t")
        assert run(capsys, "keys", "list", "acme") == (0, "", "")
    finally:
        asyncio.run(server.close())
    assert run(capsys, "add", "globex")[0] == 0


def test_without_a_data_dir_the_memory_registry_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEED_DATA_DIR")
    code, _, err = run(capsys, "list")
    assert code == 2 and "FEED_DATA_DIR is not set" in err


def test_a_corrupt_file_is_named_and_left_alone(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    (data_dir / "tenants.json").write_text("{")
    code, _, err = run(capsys, "add", "acme")
    assert code == 1 and str(data_dir / "tenants.json") in err
    assert (data_dir / "tenants.json").read_text() == "{"


def test_the_token_command_knows_the_tenants_of_the_registry(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_AUTH_SECRET", SECRET)
    assert run(capsys, "add", "acme")[0] == 0
    assert main(["token", "--tenant", "acme"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["tenant"] == "acme"
    # FEED_TENANTS not created yet: the server creates them at its next start.
    assert main(["token", "--tenant", "tenant_a"]) == 0
    capsys.readouterr()
    # A deleted tenant is none.
    assert run(capsys, "rm", "acme")[0] == 0
    assert main(["token", "--tenant", "acme"]) == 2
    assert "'acme' is not a tenant" in capsys.readouterr().err


def test_keys_add_list_and_rm_and_the_secret_is_printed_once(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    code, out, _ = run(capsys, "keys", "add", "acme", "--kid", "k1")
    added = json.loads(out)
    assert code == 0 and (added["kid"], added["alg"], added["status"]) == ("k1", "HS256", "active")
    secret = added["secret"]
    # What the CLI printed verifies acme's tokens as the server would, from what it stored.
    stored = parse_tenant_file((data_dir / TENANTS_FILE).read_bytes()).tenants["acme"]
    ring = KeyRing(lambda tenant: stored.keys, lambda tenant: stored.policy, "operator-secret")
    token = jwt.encode(
        {"tenant": "acme", "exp": 2**31}, secret, algorithm="HS256", headers={"kid": "k1"}
    )
    assert ring.verify(token).tenant == "acme"
    jwk_file = data_dir / "public.jwk"
    jwk_file.write_text(json.dumps(PUBLIC_EC_JWK))
    code, out, _ = run(capsys, "keys", "add", "acme", "--alg", "ES256", "--jwk", str(jwk_file))
    uploaded = json.loads(out)
    assert code == 0 and uploaded["jwk"] == PUBLIC_EC_JWK and "secret" not in uploaded

    code, out, _ = run(capsys, "keys", "list", "acme")
    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and [line[:3] for line in lines] == [
        ["k1", "HS256", "active"],
        [uploaded["kid"], "ES256", "active"],
    ]
    assert lines[0][3].endswith("Z")
    assert secret not in run(capsys, "show", "acme")[1] + out
    assert run(capsys, "keys", "rm", "acme", "k1") == (0, "revoked k1 of acme\n", "")
    assert run(capsys, "keys", "list", "acme")[1].startswith("k1\tHS256\trevoked\t")
    # The stored record keeps the secret: a server started on this data dir verifies with it.
    stored = json.loads((data_dir / "tenants.json").read_text())
    assert stored["tenants"][0]["keys"][0]["secret"] == secret


def test_revoke_tokens_and_the_operator_key_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    code, out, _ = run(capsys, "revoke-tokens", "acme", "--before", "1700000000")
    assert code == 0 and json.loads(out)["policy"]["tokensValidAfter"] == 1700000000
    code, out, _ = run(capsys, "revoke-tokens", "acme")
    assert code == 0 and json.loads(out)["policy"]["tokensValidAfter"] > 1700000000
    code, out, _ = run(capsys, "set", "acme", "--accept-operator-key", "yes")
    assert code == 0 and json.loads(out)["policy"]["acceptOperatorKey"] is True


PUBLIC_EC_JWK = {  # RFC 7515 A.3's key, public members only
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (("keys", "list", "nobody"), 1, "No tenant nobody"),
        (("keys", "add", "nobody"), 1, "No tenant nobody"),
        (("keys", "rm", "acme", "k9"), 1, "Tenant acme has no key k9"),
        (("keys", "add", "acme", "--kid", "taken"), 1, "Tenant acme has a key taken"),
        (("keys", "add", "acme", "--kid", "a b"), 2, "kid"),
        (("keys", "add", "acme", "--alg", "ES256"), 2, "jwk"),
        (("keys", "add", "acme", "--alg", "ES256", "--jwk", "/no/such/file"), 2, "invalid --jwk"),
        (("revoke-tokens", "acme", "--before", "9e12"), 2, "before"),
        (("revoke-tokens", "nobody"), 1, "No tenant nobody"),
    ],
)
def test_key_refusals_are_one_line_with_exit_1_or_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, said: str
) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    assert run(capsys, "keys", "add", "acme", "--kid", "taken")[0] == 0
    exit_code, out, err = run(capsys, *argv)
    assert (exit_code, out) == (code, "")
    assert err.count("\n") == 1 and err.startswith("feedserver: ") and said in err


def test_a_private_jwk_file_is_refused_and_not_stored(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert run(capsys, "add", "acme")[0] == 0
    private = data_dir / "private.jwk"
    private.write_text(
        json.dumps({**PUBLIC_EC_JWK, "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"})
    )
    code, out, err = run(capsys, "keys", "add", "acme", "--alg", "ES256", "--jwk", str(private))
    assert (code, out) == (2, "") and "private key" in err
    assert run(capsys, "keys", "list", "acme")[1] == ""
