"""`pvestrap iso prepare` and `iso inspect` on a small bootable ISO built here with xorriso (a
BIOS El Torito image with a boot-info table, an EFI image in an appended partition, Rock Ridge
and Joliet), checked with xorriso itself: the four files, the boot setup, the volume id and UUID."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re
import shutil
import subprocess
import tomllib
import zipfile

import pytest

from pvestrap.cli import main
from pvestrap.errors import OperationFailed, UserError
from pvestrap.iso import hook as iso_hook
from pvestrap.iso import prepare as iso_prepare
from pvestrap.iso import xorriso as iso_xorriso

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")

DATA = pathlib.Path(__file__).parent / "data" / "iso"
CLUSTER = DATA / "cluster.toml"
SETTINGS = DATA / "installer.toml"
HASH = tomllib.loads(SETTINGS.read_text())["installer"]["root_password_hashed"]
FOUR = ("/answer.toml", "/auto-installer-mode.toml", "/proxmox-first-boot",
        "/auto-installer-capable")


def xorriso(*args: str) -> str:
    done = subprocess.run(["xorriso", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_iso(folder: pathlib.Path, name: str, *, bootable=True, capable: bytes | None = None,
             release="9.1", grub_gpt=False) -> pathlib.Path:
    root = folder / f"{name}-root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "boot.img").write_bytes(hashlib.sha512(name.encode()).digest() * 32)
    (root / ".cd-info").write_text(f"PRODUCT='pve'\nPRODUCTLONG='Proxmox VE'\n"
                                   f"RELEASE='{release}'\nISORELEASE='1'\n")
    (root / "proxmox").mkdir()
    (root / "proxmox" / "packages.txt").write_text("pve-manager\n" * 100)
    if capable is not None:
        (root / "auto-installer-capable").write_bytes(capable)
    efi = folder / f"{name}-efi.img"
    efi.write_bytes(hashlib.sha256(b"efi").digest() * 2048)
    iso = folder / f"{name}.iso"
    boot = ["-b", "boot/boot.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
            "-append_partition", "2", "0xef", str(efi), "-eltorito-alt-boot",
            "-e", "--interval:appended_partition_2:all::", "-no-emul-boot"] if bootable else []
    if grub_gpt:  # the layout of Proxmox's own ISOs: GRUB MBR, offset 16, EFI partition in GPT
        mbr = folder / f"{name}-mbr.img"
        mbr.write_bytes(hashlib.sha512(b"mbr").digest() * 8)
        boot = ["--grub2-mbr", str(mbr), "-partition_offset", "16", "-appended_part_as_gpt",
                "-append_partition", "2", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", str(efi),
                "-c", "/boot/boot.cat", "-b", "boot/boot.img", "-no-emul-boot",
                "-boot-load-size", "4", "-boot-info-table", "-eltorito-alt-boot",
                "-e", "--interval:appended_partition_2:all::", "-no-emul-boot"]
    xorriso("-as", "mkisofs", "-o", str(iso), "-V", "PVE", "-R", "-J", *boot, str(root))
    return iso


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("isos")
    return {"plain": make_iso(folder, "plain"),
            "capable": make_iso(folder, "capable", capable=b"pve 9.1\n"),
            "old": make_iso(folder, "old", release="8.2"),
            "unbootable": make_iso(folder, "unbootable", bootable=False),
            "grub-gpt": make_iso(folder, "grub-gpt", grub_gpt=True)}


def prepare(out, iso, node="pve2", *extra):
    """The cluster's first-boot secret is made (or reused) beside OUT, not in tests/data."""
    return main(["iso", "prepare", "--iso", str(iso), "--answers", str(CLUSTER), "--node", node,
                 "--installer", str(SETTINGS), "--out", str(out), "--engine", "xorriso",
                 "--secret-file", str(secret_beside(out)), *extra])


def secret_beside(out) -> pathlib.Path:
    return pathlib.Path(out).parent / "cluster.firstboot-secret"


def extract(iso, iso_path, dest) -> bytes:
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract", iso_path, str(dest))
    return dest.read_bytes()


def boot_report(iso) -> list[str]:
    """`-report_el_torito as_mkisofs` without the image's own path and block addresses."""
    lines = xorriso("-indev", str(iso), "-report_el_torito", "as_mkisofs").splitlines()
    out = []
    for line in lines:
        if line.startswith(("-partition_hd_cyl ", "-partition_cyl_align ")):
            continue  # inferred from the image size by xorriso's report (see iso/xorriso.py)
        line = line.replace(f"'{iso}'", "'ISO'")
        line = re.sub(r"(\d+)([sd])-(\d+)[sd]", lambda m: f"{int(m[3]) - int(m[1]) + 1}{m[2]}",
                      line)
        out.append(re.sub(r"_start_\d+s_", "_start_", line))
    return out


def identity(iso) -> list[str]:
    area = xorriso("-indev", str(iso), "-report_system_area", "cmd")
    return [line for line in area.splitlines() if line.startswith(("-volid", "-volume_date"))]


def descriptor_types(iso) -> list[int]:
    data = pathlib.Path(iso).read_bytes()
    types, sector = [], 16
    while data[sector * 2048 + 1:sector * 2048 + 6] == b"CD001":
        types.append(data[sector * 2048])
        sector += 1
    return types


def boot_images(iso, folder) -> dict[str, bytes]:
    folder.mkdir()
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract_boot_images", str(folder))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def prepared(isos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    source_sha = hashlib.sha256(isos["plain"].read_bytes()).hexdigest()
    answer, hook, out = folder / "answer.toml", folder / "hook", folder / "pve2.iso"
    assert main(["iso", "answer", "--answers", str(CLUSTER), "--node", "pve2",
                 "--installer", str(SETTINGS), "--out", str(answer)]) == 0
    assert main(["iso", "hook", "--answers", str(CLUSTER), "--out", str(hook),
                 "--secret-file", str(secret_beside(hook))]) == 0
    assert prepare(out, isos["plain"]) == 0
    assert hashlib.sha256(isos["plain"].read_bytes()).hexdigest() == source_sha
    return {"iso": out, "answer": answer, "hook": hook, "folder": folder}


def test_the_four_files_are_byte_identical_to_iso_answer_and_iso_hook(prepared, tmp_path):
    iso = prepared["iso"]
    got = {p: extract(iso, p, tmp_path / p.strip("/")) for p in FOUR}
    assert got["/answer.toml"] == prepared["answer"].read_bytes()
    assert got["/proxmox-first-boot"] == prepared["hook"].read_bytes()
    assert got["/auto-installer-mode.toml"] == b'mode = "iso"\n'
    assert got["/auto-installer-capable"] == b""
    assert tomllib.loads(got["/answer.toml"].decode())["global"]["fqdn"] == \
        "pve2.rack1.example.com"
    assert iso.stat().st_mode & 0o777 == 0o600  # it carries the root password hash
    listing = xorriso("-indev", str(iso), "-find", "/", "-type", "f").split()
    assert {f"'{p}'" for p in FOUR} | {"'/boot/boot.img'", "'/.cd-info'"} <= set(listing)


def test_boot_setup_volume_id_uuid_and_joliet_are_kept(isos, prepared, tmp_path):
    source, iso = isos["plain"], prepared["iso"]
    assert boot_report(iso) == boot_report(source)
    assert any(line.startswith("-b '/boot/boot.img'") for line in boot_report(iso))
    assert any(line.startswith("-append_partition 2 0xef") for line in boot_report(iso))
    assert identity(iso) == identity(source)
    assert [line.split()[0] for line in identity(iso)] == ["-volid", "-volume_date"]
    assert descriptor_types(iso) == descriptor_types(source) == [1, 0, 2, 255]
    before, after = boot_images(source, tmp_path / "before"), boot_images(iso, tmp_path / "after")
    assert sorted(before) == sorted(after)
    assert after["eltorito_img2_uefi.img"] == before["eltorito_img2_uefi.img"]
    assert after["mbr_part2_efi.img"] == before["mbr_part2_efi.img"]
    # bytes 8..63 of a no-emulation image are the boot-info table xorriso fills in.
    bios_before, bios_after = before["eltorito_img1_bios.img"], after["eltorito_img1_bios.img"]
    assert bios_after[:8] == bios_before[:8] and bios_after[64:] == bios_before[64:]


def test_a_grub2_mbr_and_gpt_layout_is_kept_too(isos, tmp_path):
    source, out = isos["grub-gpt"], tmp_path / "pve1.iso"
    assert any(line.startswith("--grub2-mbr") for line in boot_report(source))
    assert "-appended_part_as_gpt" in boot_report(source)
    assert prepare(out, source, "pve1") == 0
    assert boot_report(out) == boot_report(source)
    assert identity(out) == identity(source)
    before, after = boot_images(source, tmp_path / "before"), boot_images(out, tmp_path / "after")
    assert after["eltorito_img2_uefi.img"] == before["eltorito_img2_uefi.img"]
    assert extract(out, "/auto-installer-mode.toml", tmp_path / "mode") == b'mode = "iso"\n'


def test_the_hook_extracted_from_the_iso_runs_on_a_plain_python(prepared, tmp_path):
    hook = tmp_path / "proxmox-first-boot"
    extract(prepared["iso"], "/proxmox-first-boot", hook)
    done = subprocess.run(["/usr/bin/python3", str(hook), "--selftest", "--state-dir",
                           str(tmp_path / "state")], env={}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed"] == {}
    assert (tmp_path / "state" / "answers.toml").read_bytes() == CLUSTER.read_bytes()


def test_inspect_shows_mode_masked_answer_hook_and_cluster_file(prepared, capsys):
    assert main(["iso", "inspect", str(prepared["iso"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == 'mode = "iso"\n'
    assert report["capable_flag"] is True and report["bootable"] is True
    assert report["volume_id"] == "PVE"
    assert HASH not in report["answer"]
    assert 'root-password-hashed = "<redacted>"' in report["answer"]
    assert report["answer"].replace('"<redacted>"', json.dumps(HASH)) == \
        prepared["answer"].read_text()
    hook = report["hook"]
    assert hook["size"] == prepared["hook"].stat().st_size
    assert hook["sha256"] == hashlib.sha256(prepared["hook"].read_bytes()).hexdigest()
    assert hook["pvestrap_hook"] is True
    assert hook["cluster_answers"] == CLUSTER.read_text()
    assert set(hook["manifest"]["dependencies"]) == {"jinja2", "markupsafe", "ntplib", "ping3"}
    assert hook["manifest"]["firstboot_secret"] == {"member": "pvestrap-hook/firstboot.secret"}
    assert main(["iso", "inspect", str(prepared["iso"])]) == 0
    text = capsys.readouterr().out
    assert HASH not in text
    assert "first-boot secret: carried (never shown" in text
    assert secret_beside(prepared["iso"]).read_text().strip() not in text
    assert f"hook (/proxmox-first-boot): {hook['size']} bytes" in text


def test_an_iso_that_has_the_flag_keeps_it(isos, tmp_path, capsys):
    out = tmp_path / "pve1.iso"
    assert prepare(out, isos["capable"], "pve1") == 0
    assert extract(out, "/auto-installer-capable", tmp_path / "flag") == b"pve 9.1\n"
    assert "no /auto-installer-capable" not in capsys.readouterr().err


def test_warnings_for_an_iso_without_the_flag_and_an_old_release(isos, tmp_path, capsys):
    assert prepare(tmp_path / "old.iso", isos["old"], "pve1") == 0
    err = capsys.readouterr().err
    assert "has no /auto-installer-capable" in err
    assert "Proxmox VE 8.2: answer files with kebab-case keys need 8.4" in err


def test_partition_mode(isos, tmp_path, capsys):
    folder = tmp_path / "usb"
    assert main(["iso", "prepare", "--answers", str(CLUSTER), "--node", "pve3",
                 "--installer", str(SETTINGS), "--partition", str(folder)]) == 0
    assert "PROXMOX-AIS" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["answer.toml"]
    assert main(["iso", "answer", "--answers", str(CLUSTER), "--node", "pve3",
                 "--installer", str(SETTINGS)]) == 0
    assert (folder / "answer.toml").read_text() == capsys.readouterr().out
    out = tmp_path / "rack.iso"
    assert prepare(out, isos["plain"], "pve3", "--partition", str(tmp_path / "usb2")) == 0
    files = set(xorriso("-indev", str(out), "-find", "/", "-type", "f").split())
    assert "'/answer.toml'" not in files and "'/proxmox-first-boot'" in files
    assert extract(out, "/auto-installer-mode.toml", tmp_path / "mode") == \
        b'mode = "partition"\n'
    assert out.stat().st_mode & 0o777 == 0o600  # its hook carries the first-boot secret
    assert (tmp_path / "usb2" / "answer.toml").is_file()


# -- refused before anything is written ----------------------------------------------------------

def _refused(out, code_or_text, capsys):
    err = capsys.readouterr().err
    assert code_or_text in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))


def test_broken_answer_rules_are_refused(isos, tmp_path, capsys):
    settings = tmp_path / "installer.toml"
    settings.write_text(SETTINGS.read_text().replace('country = "dk"', 'country = "Denmark"'))
    out = tmp_path / "pve2.iso"
    assert main(["iso", "prepare", "--iso", str(isos["plain"]), "--answers", str(CLUSTER),
                 "--node", "pve2", "--installer", str(settings), "--out", str(out)]) == 2
    _refused(out, "[installer-country-invalid]", capsys)


def test_a_hook_over_1_mib_is_refused(isos, tmp_path, capsys):
    import secrets

    big = tmp_path / "cluster.toml"
    noise = secrets.token_urlsafe(735_000)
    lines = "\n".join(noise[i:i + 100] for i in range(0, len(noise), 100))
    big.write_text(CLUSTER.read_text().replace(
        '[datacenter]\n', f'[datacenter]\ndescription = """\n{lines}"""\n'))
    out = tmp_path / "pve2.iso"
    assert main(["iso", "prepare", "--iso", str(isos["plain"]), "--answers", str(big),
                 "--node", "pve2", "--installer", str(SETTINGS), "--out", str(out)]) == 2
    _refused(out, "over the installer's limit of 1048576 bytes", capsys)


@pytest.mark.parametrize("kind", ["missing", "text", "folder", "unbootable", "same"])
def test_bad_isos_are_refused(isos, tmp_path, capsys, kind):
    out = tmp_path / "pve2.iso"
    if kind == "missing":
        iso, expect = tmp_path / "nope.iso", "no such file"
    elif kind == "text":
        iso, expect = tmp_path / "fake.iso", "not an ISO 9660 image"
        iso.write_text("not an iso\n" * 5000)
    elif kind == "folder":
        iso, expect = tmp_path, "is a directory"
    elif kind == "unbootable":
        iso, expect = isos["unbootable"], "no El Torito boot record"
    else:
        iso = tmp_path / "copy.iso"
        shutil.copy(isos["plain"], iso)
        out, expect = iso, "--out must differ from --iso"
        before = iso.read_bytes()
    assert prepare(out, iso) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    if kind == "same":
        assert iso.read_bytes() == before
    else:
        assert not out.exists()


def test_an_out_path_that_is_a_folder_is_refused(isos, tmp_path, capsys):
    out = tmp_path / "out.iso"
    out.mkdir()
    assert prepare(out, isos["plain"]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(UserError) as caught:
        iso_prepare.prepare_iso(isos["plain"], out, iso_hook.build(CLUSTER), "x = 1\n", "xorriso")
    assert caught.value.code == "out-invalid"
    assert list(out.iterdir()) == []


def test_the_assistant_engine_needs_the_assistant(isos, tmp_path, capsys):
    if shutil.which(iso_prepare.ASSISTANT):
        pytest.skip("proxmox-auto-install-assistant is installed here")
    out = tmp_path / "pve2.iso"
    assert prepare(out, isos["plain"], "pve2", "--engine", "assistant") == 2
    _refused(out, "proxmox-auto-install-assistant is not installed", capsys)


def test_a_rewrite_that_lost_or_changed_a_file_fails_its_check(isos, tmp_path):
    """The check before the rename compares what is in the new image with what was meant."""
    source = iso_xorriso.describe(isos["plain"])
    meant = {"/answer.toml": tmp_path / "a.toml", "/proxmox-first-boot": tmp_path / "hook"}
    meant["/answer.toml"].write_text("x = 1\n")
    meant["/proxmox-first-boot"].write_bytes(b"#!/bin/sh\n")
    built = tmp_path / "built.iso"
    iso_xorriso.rewrite(source, str(built), {"/answer.toml": str(meant["/answer.toml"])})
    meant["/answer.toml"].write_text("x = 2\n")
    with pytest.raises(OperationFailed) as caught:
        iso_prepare._verify(str(built), source, {k: str(v) for k, v in meant.items()}, "xorriso",
                            tmp_path)
    assert caught.value.code == "iso-verify-failed"
    assert "/answer.toml differs" in caught.value.message
    assert "/proxmox-first-boot is missing" in caught.value.message


def test_hook_limit_is_the_installers():
    assert iso_hook.MAX_BYTES == 1024 * 1024


def test_partition_answer_never_goes_through_a_planted_symlink(tmp_path, capsys):
    """answer.toml carries root's password hash: a symlink planted where it goes (pointing at
    a world-readable file) is refused, and nothing is written through it."""
    folder = tmp_path / "usb"
    folder.mkdir()
    leak = tmp_path / "world-readable"
    leak.write_text("")
    leak.chmod(0o644)
    (folder / "answer.toml").symlink_to(leak)
    assert main(["iso", "prepare", "--answers", str(CLUSTER), "--node", "pve3",
                 "--installer", str(SETTINGS), "--partition", str(folder)]) == 2
    assert "symlink" in capsys.readouterr().err
    assert leak.read_text() == "" and (folder / "answer.toml").is_symlink()


def test_every_node_of_a_cluster_gets_the_same_secret_made_once_and_never_shown(
        isos, tmp_path, capfd):
    """The first ISO of a cluster makes its first-boot secret (0600, beside the answers by
    default); the next ones reuse it, so every node's hook carries the same one. No output,
    no answer file and no installer answer holds it."""
    one, two = tmp_path / "pve1.iso", tmp_path / "pve2.iso"
    assert prepare(one, isos["plain"], "pve1") == 0
    made = capfd.readouterr()
    secret = secret_beside(one)
    assert secret.stat().st_mode & 0o777 == 0o600
    assert f"first-boot secret: {secret}, made now (mode 0600)" in made.err
    assert prepare(two, isos["plain"], "pve2") == 0
    reused = capfd.readouterr()
    assert f"first-boot secret: {secret}, reused" in reused.err
    hooks = [zipfile.ZipFile(io.BytesIO(extract(iso, "/proxmox-first-boot", tmp_path / iso.stem)))
             for iso in (one, two)]
    carried = {hook.read("pvestrap-hook/firstboot.secret") for hook in hooks}
    assert carried == {secret.read_bytes()}
    value = secret.read_text().strip()
    assert len(bytes.fromhex(value)) == 32
    answers = [hook.read("pvestrap-hook/answers.toml") for hook in hooks]
    installer = extract(one, "/answer.toml", tmp_path / "answer.toml")
    for text in [made.out, made.err, reused.out, reused.err, installer.decode(),
                 *(a.decode() for a in answers)]:
        assert value not in text.lower()
    assert main(["iso", "inspect", str(one), "--json"]) == 0
    assert value not in capfd.readouterr().out


def test_a_loose_secret_file_is_refused_before_anything_is_written(isos, tmp_path, capsys):
    out = tmp_path / "pve1.iso"
    secret_beside(out).write_text("00" * 32 + "\n")
    secret_beside(out).chmod(0o644)
    assert prepare(out, isos["plain"], "pve1") == 2
    err = capsys.readouterr().err
    assert "can be read or changed by other users" in err and "fix: chmod 600" in err
    assert not out.exists()
