"""RunKey: text form, loading and saving, what it derives, and what it never shows."""

import os
import re
import stat

import pytest
import zmq

from maddpg.transport.security import RunKey

KEY_A = RunKey(bytes(range(32)))
KEY_B = RunKey(bytes(range(1, 33)))


def test_text_round_trips_and_generate_gives_new_keys():
    key = RunKey.generate()
    assert len(key.text) == 64 and RunKey.from_text(key.text) == key
    assert RunKey.from_text(key.text.upper()) == key
    assert RunKey.generate() != key


@pytest.mark.parametrize("text, problem", [
    ("ab" * 31, "expected 64 hex characters, got 62"),
    ("ab" * 33, "expected 64 hex characters, got 66"),
    ("", "got 0"),
    (" " + "ab" * 31 + "a", "position 0"),
    ("ab" * 20 + "zz" + "ab" * 11, "not hexadecimal (first bad character at position 40)"),
])
def test_bad_text_is_refused_with_the_problem_named(text, problem):
    with pytest.raises(ValueError, match="run key") as e:
        RunKey.from_text(text)
    assert problem in str(e.value)


def test_a_key_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="expected 32 bytes, got 31"):
        RunKey(bytes(31))


def test_load_prefers_the_text_then_the_file(tmp_path):
    file_a = tmp_path / "a"
    file_a.write_text(KEY_A.text + "\n")  # a mounted Secret often ends in a newline
    assert RunKey.load(KEY_B.text, file=file_a) == KEY_B
    assert RunKey.load(file=file_a) == KEY_A
    assert RunKey.load("", file=file_a) == KEY_A
    assert RunKey.load() is None
    assert RunKey.load("", file="") is None


def test_load_names_where_a_bad_key_came_from_without_showing_it(tmp_path):
    bad = tmp_path / "key"
    bad.write_text("secret-but-not-hex" * 4)
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: run key: expected 64") as e:
        RunKey.load(file=bad)
    assert "secret" not in str(e.value).replace(str(tmp_path), "")
    with pytest.raises(ValueError, match=r"^\$MADDPG_RUN_KEY: run key: not hexadecimal"):
        RunKey.load("g" * 64)
    with pytest.raises(FileNotFoundError):
        RunKey.load(file=tmp_path / "missing")


def test_save_writes_an_owner_only_file_atomically(tmp_path):
    path = tmp_path / "run.key"
    path.write_text("old")
    os.chmod(path, 0o644)
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        KEY_A.save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RunKey.load(file=path) == KEY_A
    assert os.listdir(tmp_path) == ["run.key"]  # no temporary file left behind


def test_repr_and_str_show_a_fingerprint_never_the_key():
    for shown in (repr(KEY_A), str(KEY_A), f"{KEY_A}", repr([KEY_A])):
        assert KEY_A.text not in shown and KEY_A.text[:16] not in shown
        assert shown.count(KEY_A.fingerprint) == 1
    assert len(KEY_A.fingerprint) == 8 and KEY_A.fingerprint != KEY_B.fingerprint


def test_derivation_is_deterministic_and_differs_between_keys_and_uses():
    again = RunKey.from_text(KEY_A.text)
    assert again.server_keypair == KEY_A.server_keypair and again.client_keypair == KEY_A.client_keypair
    assert again.stream_key == KEY_A.stream_key and len(KEY_A.stream_key) == 32
    for key in (KEY_A, KEY_B):
        for pair in (key.server_keypair, key.client_keypair):
            assert len(pair.public) == len(pair.secret) == 40
            assert zmq.curve_public(pair.secret) == pair.public  # a valid keypair
    derived = [zmq.utils.z85.decode(p.secret) for k in (KEY_A, KEY_B) for p in (k.server_keypair, k.client_keypair)]
    derived += [KEY_A.stream_key, KEY_B.stream_key]
    assert len(set(derived)) == 6
    assert all(KEY_A.text not in d.hex() for d in derived)
