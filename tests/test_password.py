"""The one password resolver (pvestrap.password): environment variable or a file only root may
read; every refusal names the path and the reason, exit 2, and never the password."""

from __future__ import annotations

import os

import pytest

from pvestrap.errors import UserError
from pvestrap.password import MAX_BYTES, read_password_file, resolve_password
from pvestrap.plan import JoinTarget
from pvestrap.recorded import DryRunSystem, RecordingSystem
from pvestrap.system import RealSystem

def test_password_from_a_private_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text("correct horse\nsecond line\n")
    path.chmod(0o600)
    assert resolve_password(JoinTarget(password_file=str(path))).value == "correct horse"
    path.chmod(0o400)
    assert resolve_password(JoinTarget(password_file=str(path))).value == "correct horse"


@pytest.mark.parametrize("content,mode,code", [
    ("pw\n", 0o644, "password-file-insecure"),
    ("pw\n", 0o606, "password-file-insecure"),
    ("pw\n", 0o640, "password-file-insecure"),  # the group may not read it either
    ("pw\n", 0o620, "password-file-insecure"),  # nor write it
    ("\n", 0o600, "password-missing"),
    (None, None, "password-missing"),
    ("dir", None, "password-file-invalid"),
])
def test_password_files_that_are_unsafe_or_unusable_are_refused(tmp_path, content, mode, code):
    path = tmp_path / "pw"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(UserError) as info:
        resolve_password(JoinTarget(password_file=str(path)))
    assert info.value.code == code and info.value.exit_code == 2
    assert "pw\n" not in info.value.message


def test_password_from_the_environment_and_none_without_a_source():
    target = JoinTarget(password_env="PVESTRAP_TEST_PW")
    assert resolve_password(target, {"PVESTRAP_TEST_PW": "s3cret"}).value == "s3cret"
    with pytest.raises(UserError, match="PVESTRAP_TEST_PW") as info:
        resolve_password(target, {})
    assert info.value.code == "password-missing"
    assert resolve_password(JoinTarget()) is None
    os.environ.pop("PVESTRAP_UNSET_FOR_TEST", None)
    with pytest.raises(UserError):
        resolve_password(JoinTarget(password_env="PVESTRAP_UNSET_FOR_TEST"))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "pw"
    path.write_text("pw\n")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(UserError) as info:
        resolve_password(JoinTarget(password_file=str(path)))
    assert info.value.code == "password-file-insecure" and "uid 65534" in info.value.message
    assert str(path) in info.value.message and info.value.remedy == f"chown root {path}"


def test_a_symlink_to_a_private_file_is_followed_and_a_fifo_is_refused_without_blocking(
        tmp_path):
    real = tmp_path / "real"
    real.write_text("through the link\n")
    real.chmod(0o600)
    (tmp_path / "link").symlink_to(real)
    assert resolve_password(JoinTarget(password_file=str(tmp_path / "link"))).value == \
        "through the link"
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(UserError) as info:
        resolve_password(JoinTarget(password_file=str(tmp_path / "fifo")))
    assert info.value.code == "password-file-invalid" and "not a regular file" in \
        info.value.message


def test_the_read_is_bounded_and_a_large_file_refused(tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(b"pw\n" + b"x" * MAX_BYTES)
    path.chmod(0o600)
    found = RealSystem().read_owned(str(path), MAX_BYTES)
    assert len(found.data) == MAX_BYTES + 1  # never more than the cap and one byte
    with pytest.raises(UserError) as info:
        resolve_password(JoinTarget(password_file=str(path)))
    assert info.value.code == "password-file-invalid" and str(MAX_BYTES) in info.value.message
    path.write_bytes(b"pw\n" + b"x" * (MAX_BYTES - 3))
    assert resolve_password(JoinTarget(password_file=str(path))).value == "pw"


def test_not_utf8_and_an_empty_first_line_are_refused(tmp_path):
    path = tmp_path / "pw"
    for content, code in ((b"\xff\xfe\n", "password-file-invalid"),
                          (b"\r\npw\n", "password-missing")):
        path.write_bytes(content)
        path.chmod(0o600)
        with pytest.raises(UserError) as info:
            resolve_password(JoinTarget(password_file=str(path)))
        assert info.value.code == code and str(path) in info.value.message


def test_the_file_is_read_through_the_system_seam(tmp_path):
    """apply reads the node's file: under a lab node's root, or from an in-memory node."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root/pw").write_text("node pw\n")
    (tmp_path / "root/pw").chmod(0o600)
    lab_node = RealSystem(root=str(tmp_path))
    assert read_password_file("/root/pw", lab_node).value == "node pw"
    assert read_password_file("/root/pw", DryRunSystem(lab_node)).value == "node pw"
    memory = RecordingSystem({"/root/pw": "from memory\n"})
    with pytest.raises(UserError) as info:
        read_password_file("/root/pw", memory)  # 0644 by default
    assert info.value.code == "password-file-insecure" and "0644" in info.value.message
    memory.write_text("/root/pw", "from memory\n", 0o600)
    assert read_password_file("/root/pw", memory).value == "from memory"
