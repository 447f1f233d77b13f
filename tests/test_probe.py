"""The probe wire format: authentic round trips, silence for anything else, no amplification."""

from __future__ import annotations

import os
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvestrap.checks import probe as wire
from pvestrap.errors import UserError

TOKEN = wire.Token(b"0123456789abcdef-run-token")
OTHER = wire.Token(b"0123456789abcdef-other-run")


def test_probe_round_trip_keeps_every_field():
    sent = wire.Probe(session=0xDEADBEEF01, seq=7, t1_ns=1_700_000_000_123_456_789, size=300,
                      reply_size=200)
    data, t1 = wire.encode_probe(TOKEN, sent)
    assert len(data) == 300 and t1 == sent.t1_ns
    assert wire.decode_probe(TOKEN, data) == sent


def test_reply_round_trip_carries_the_four_timestamps_and_rx_mtu():
    probe = wire.Probe(5, 9, 111, size=200, reply_size=150)
    data, t3 = wire.encode_reply(TOKEN, probe, t2_ns=222, rx_mtu=1500, t3_ns=333)
    reply = wire.decode_reply(TOKEN, data)
    assert t3 == 333
    assert reply == wire.Reply(5, 9, 111, 222, 333, probe_size=200, rx_mtu=1500, size=150)


def test_clock_is_read_after_hashing_and_ends_up_in_the_datagram():
    ticks = iter([42, 43])
    data, t1 = wire.encode_probe(TOKEN, wire.Probe(1, 2), clock=lambda: next(ticks))
    assert t1 == 42 and wire.decode_probe(TOKEN, data).t1_ns == 42
    reply, t3 = wire.encode_reply(TOKEN, wire.decode_probe(TOKEN, data), 40,
                                  clock=lambda: next(ticks))
    assert t3 == 43 and wire.decode_reply(TOKEN, reply).t3_ns == 43


def test_wrong_token_is_rejected_both_ways():
    data, _ = wire.encode_probe(TOKEN, wire.Probe(1, 1, 1))
    assert wire.decode_probe(OTHER, data) is None
    reply, _ = wire.encode_reply(TOKEN, wire.Probe(1, 1, 1), 2, t3_ns=3)
    assert wire.decode_reply(OTHER, reply) is None


@given(st.integers(min_value=0, max_value=wire.PROBE_MIN + 40 - 1), st.integers(0, 255))
def test_any_flipped_byte_is_rejected(position, flip):
    data = bytearray(wire.encode_probe(TOKEN, wire.Probe(3, 4, 5, size=wire.PROBE_MIN + 40))[0])
    if flip == 0:
        flip = 1
    data[position] ^= flip
    assert wire.decode_probe(TOKEN, bytes(data)) is None


def test_truncated_extended_and_garbage_datagrams_are_rejected():
    data, _ = wire.encode_probe(TOKEN, wire.Probe(3, 4, 5, size=100))
    for bad in (data[:-1], data + b"\0", b"", b"PVSP", bytes(200), data[:wire.PROBE_MIN - 1]):
        assert wire.decode_probe(TOKEN, bad) is None


def test_a_reply_is_never_taken_for_a_probe_and_back():
    """Two responders must not be able to bounce replies between each other forever."""
    probe, _ = wire.encode_probe(TOKEN, wire.Probe(1, 1, 1, size=200))
    reply, _ = wire.encode_reply(TOKEN, wire.Probe(1, 1, 1, size=200, reply_size=200), 2, t3_ns=3)
    assert wire.decode_reply(TOKEN, probe) is None
    assert wire.decode_probe(TOKEN, reply) is None


@settings(max_examples=300)
@given(size=st.integers(wire.PROBE_MIN, 9000), wanted=st.integers(0, 70_000))
def test_reply_is_never_larger_than_the_probe(size, wanted):
    data, _ = wire.encode_probe(TOKEN, wire.Probe(1, 2, 3, size=size, reply_size=wanted))
    received = wire.decode_probe(TOKEN, data)
    reply, _ = wire.encode_reply(TOKEN, received, 4, t3_ns=5)
    assert wire.REPLY_MIN <= len(reply) <= len(data)
    assert len(reply) == max(wire.REPLY_MIN, min(wanted, size))


def test_probe_smaller_than_a_reply_cannot_be_built():
    with pytest.raises(ValueError):
        wire.encode_probe(TOKEN, wire.Probe(1, 1, 1, size=wire.REPLY_MIN - 1))
    assert wire.PROBE_MIN >= wire.REPLY_MIN


def test_token_never_shows_its_secret():
    from pvestrap.checks.responder import ResponderConfig

    token = wire.Token(b"super-secret-value-123")
    for text in (repr(token), str(token), repr(ResponderConfig(token)), f"{token}"):
        assert "super-secret" not in text


def test_load_token_sources(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-a-file-0123456789\nsecond line ignored\n")
    assert wire.load_token(file=str(path)).secret == b"from-a-file-0123456789"
    assert wire.load_token("given-on-the-command-line").secret == b"given-on-the-command-line"
    env = {wire.TOKEN_ENV: "from-the-environment-42"}
    assert wire.load_token(environ=env).secret == b"from-the-environment-42"


@pytest.mark.parametrize("kwargs, code_word", [
    ({"environ": {}}, "no probe token"),
    ({"value": "short", "environ": {}}, "too short"),
    ({"value": "x" * 20, "file": "/nonexistent", "environ": {}}, "not both"),
    ({"file": "/nonexistent/token", "environ": {}}, "cannot read"),
])
def test_load_token_refuses_bad_input_as_user_error(kwargs, code_word):
    with pytest.raises(UserError) as info:
        wire.load_token(**kwargs)
    assert info.value.exit_code == 2 and info.value.remedy
    assert code_word in info.value.message


@pytest.mark.parametrize("name, make, word", [
    ("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    ("folder", lambda p: p.mkdir(), "not a regular file"),
    ("huge", lambda p: p.write_bytes(b"x" * (wire.TOKEN_FILE_MAX + 1)), "larger than"),
])
def test_a_token_file_is_a_bounded_regular_file(tmp_path, name, make, word):
    """--token-file /dev/zero or a FIFO must not hang or eat memory: exit 2, naming the path."""
    path = tmp_path / name
    make(path)
    with pytest.raises(UserError) as info:
        wire.load_token(file=str(path), environ={})
    assert info.value.exit_code == 2 and word in info.value.message
    assert str(path) in info.value.message and info.value.remedy


def test_given_token_is_none_without_a_file_or_the_environment(tmp_path):
    assert wire.given_token(None, environ={}) is None
    env = {wire.TOKEN_ENV: "from-the-environment-42"}
    assert wire.given_token(None, environ=env).secret == b"from-the-environment-42"
    path = tmp_path / "token"
    path.write_text("from-a-file-0123456789\n")
    assert wire.given_token(str(path), environ=env).secret == b"from-a-file-0123456789"
