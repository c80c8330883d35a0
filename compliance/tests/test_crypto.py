"""compliance.crypto: Fernet tokens under a key ring from settings, keyed lookup hashes."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from compliance import crypto

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def test_round_trip_text_and_bytes():
    token = crypto.encrypt("Type 2 diabetes — metformin 500 mg")
    assert isinstance(token, str) and "metformin" not in token
    assert crypto.looks_encrypted(token)
    assert crypto.decrypt(token) == "Type 2 diabetes — metformin 500 mg"
    assert crypto.decrypt_bytes(crypto.encrypt(b"\x00\xffraw")) == b"\x00\xffraw"


def test_same_plaintext_gives_different_tokens():
    assert crypto.encrypt("x") != crypto.encrypt("x")


def test_a_token_from_a_dropped_key_is_refused_clearly():
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A]):
        token = crypto.encrypt("secret")
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B]):
        with pytest.raises(crypto.DecryptionError) as caught:
            crypto.decrypt(token)
    assert KEY_A not in str(caught.value) and KEY_B not in str(caught.value)


def test_old_keys_decrypt_and_rotate_moves_to_the_first_key():
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A]):
        token = crypto.encrypt("secret")
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B, KEY_A]):
        assert crypto.decrypt(token) == "secret"
        assert not crypto.is_current(token)
        rotated = crypto.rotate(token)
        assert crypto.is_current(rotated)
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B]):
        assert crypto.decrypt(rotated) == "secret"


def test_a_malformed_key_is_named_by_position_not_value():
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A, "not-a-key-at-all"]):
        with pytest.raises(ImproperlyConfigured) as caught:
            crypto.encrypt("x")
    assert "#2" in str(caught.value) and "not-a-key-at-all" not in str(caught.value)


def test_empty_keys_are_refused():
    with override_settings(FIELD_ENCRYPTION_KEYS=[], FIELD_HMAC_KEY=""):
        with pytest.raises(ImproperlyConfigured):
            crypto.encrypt("x")
        with pytest.raises(ImproperlyConfigured):
            crypto.hmac_digest("x")


def test_development_derives_stable_keys_from_the_secret_key():
    import subprocess

    from tests.support import PYTHON_BIN, ROOT, django_env

    code = "from django.conf import settings as s; print(s.FIELD_ENCRYPTION_KEYS[0], s.FIELD_HMAC_KEY)"
    runs = [
        subprocess.run(
            [str(PYTHON_BIN / "python"), "manage.py", "shell", "--no-imports", "-c", code],
            cwd=ROOT,
            env=django_env(DJANGO_SECRET_KEY="dev-secret-" + "x" * 40),
            capture_output=True,
            text=True,
        )
        for _ in range(2)
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout  # the next run reads what this one wrote
    fernet_key, hmac_key = runs[0].stdout.splitlines()[-1].split()
    Fernet(fernet_key)
    assert fernet_key != hmac_key


def test_hmac_digest_is_keyed_and_stable():
    with override_settings(FIELD_HMAC_KEY="k1"):
        one = crypto.hmac_digest("a@example.com")
        assert one == crypto.hmac_digest("a@example.com") and len(one) == 64
    with override_settings(FIELD_HMAC_KEY="k2"):
        assert crypto.hmac_digest("a@example.com") != one
