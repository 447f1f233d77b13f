"""`pvestrap iso validate-answer` and `pvestrap iso answer`: the installer's rules, the rendered
answer.toml, the installer settings file and the root password handling."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import tomllib

import pytest

from pvestrap.answer_schema import INSTALLER_KEYS
from pvestrap.answers import load
from pvestrap.cli import main
from pvestrap.errors import UserError, ValidationFailed
from pvestrap.installer import rules as installer_rules
from pvestrap.installer import validate as installer_validate
from pvestrap.installer.answer import keyboard_for_installer
from pvestrap.iso import installer_answer

DATA = pathlib.Path(__file__).parent / "data" / "iso"
CLUSTER = DATA / "cluster.toml"
SETTINGS = DATA / "installer.toml"
HASH = tomllib.loads(SETTINGS.read_text())["installer"]["root_password_hashed"]


def codes(findings):
    return [(f.code, f.subject, f.payload.get("line")) for f in findings]


# -- validate-answer -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["answer-zfs.toml", "answer-dhcp.toml"])
def test_hand_written_answers_in_the_documented_shape_are_valid(name, capsys):
    assert main(["iso", "validate-answer", str(DATA / name)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{DATA / name}: valid\n"
    assert captured.err == ""


def test_every_broken_rule_is_listed_with_its_key_and_line():
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(DATA / "answer-broken.toml")
    assert codes(caught.value.findings) == [
        ("installer-value-invalid", "global.keyboard", 3),
        ("installer-country-invalid", "global.country", 4),
        ("installer-fqdn-invalid", "global.fqdn", 5),
        ("installer-mailto-invalid", "global.mailto", 6),
        ("installer-timezone-invalid", "global.timezone", 7),
        ("installer-password-length", "global.root-password", 8),
        ("installer-value-invalid", "global.reboot-mode", 9),
        ("installer-key-unknown", "global.language", 10),
        ("installer-key-missing", "network.dns", 12),
        ("installer-key-missing", "network.filter", 12),
        ("installer-cidr-invalid", "network.cidr", 14),
        ("installer-disk-duplicate", "disk-setup.disk-list[2]", 19),
        ("installer-disks-too-many", "disk-setup.disk-list", 19),
        ("installer-disks-conflict", "disk-setup.filter", 20),
        ("installer-fs-options-conflict", "disk-setup.zfs", 21),
        ("installer-swapsize-too-large", "disk-setup.lvm.swapsize", 22),
        ("installer-key-missing", "first-boot.url", 25),
        ("installer-value-invalid", "first-boot.ordering", 27),
    ]
    assert caught.value.findings[6].payload["allowed"] == ["reboot", "power-off"]


def test_the_cli_exits_2_and_prints_file_line_key_and_code(capsys):
    assert main(["iso", "validate-answer", str(DATA / "answer-broken.toml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {DATA / 'answer-broken.toml'}: 18 problems found"
    assert f"  {DATA / 'answer-broken.toml'}:14: network.cidr: '10.0.10.11/33' is not an " \
           "address with a prefix length [installer-cidr-invalid]" in err


def _answer(tmp_path, text):
    path = tmp_path / "answer.toml"
    path.write_text(text)
    return path


BASE = (DATA / "answer-zfs.toml").read_text()


_R = "root-password-hashed = \"$6$rounds"


@pytest.mark.parametrize("old, new, expected", [
    ('root-password-hashed = "$6$', 'root-password = "12345678"\nroot-password-hashed = "$6$',
     [("installer-password-conflict", "global.root-password-hashed")]),
    (_R, "x" + _R, [("installer-password-missing", "global"),
                    ("installer-key-unknown", "global.xroot-password-hashed")]),
    ('fqdn = "pve1.lab.example.com"', 'fqdn = "123.example.com"',
     [("installer-fqdn-invalid", "global.fqdn")]),
    ('fqdn = "pve1.lab.example.com"', 'fqdn = "pve1-.example.com"',
     [("installer-fqdn-invalid", "global.fqdn")]),
    ('filesystem = "zfs"', 'filesystem = "ntfs"',
     [("installer-value-invalid", "disk-setup.filesystem")]),
    ('zfs.raid = "raid1"', 'zfs.raid = "raidz-2"',
     [("installer-disks-too-few", "disk-setup.disk-list")]),
    ('zfs.raid = "raid1"\n', '', [("installer-raid-missing", "disk-setup.zfs.raid")]),
    ('zfs.ashift = 12', 'zfs.ashift = -1',  # a u32: the installer's only bound
     [("installer-value-out-of-range", "disk-setup.zfs.ashift")]),
    ('zfs.ashift = 12', 'zfs.ashift = "12"', [("installer-type-invalid", "disk-setup.zfs.ashift")]),
    ('disk-list = ["sda", "sdb"]\n', '', [("installer-disks-missing", "disk-setup")]),
    ('source = "from-answer"', 'source = "from-dhcp"',
     [("installer-key-not-allowed", f"network.{k}") for k in ("cidr", "dns", "gateway", "filter")]),
    ('dns = "10.0.10.1"', 'dns = "10.0.10"', [("installer-address-invalid", "network.dns")]),
    ('source = "from-iso"', 'source = "from-cd"',
     [("installer-value-invalid", "first-boot.source")]),
    ('[first-boot]\nsource = "from-iso"', '[first-boot]\nsource = "from-url"\nurl = "ftp://x"',
     [("installer-url-invalid", "first-boot.url")]),
    ('reboot-on-error = false', 'reboot-on-error = "no"',
     [("installer-type-invalid", "global.reboot-on-error")]),
    ('[disk-setup]', '[disk_setup]', [("installer-key-misspelled", "disk_setup")]),
])
def test_one_broken_rule_gives_exactly_its_findings(tmp_path, old, new, expected):
    assert old in BASE
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(_answer(tmp_path, BASE.replace(old, new, 1)))
    assert [(f.code, f.subject) for f in caught.value.findings] == list(expected)


def test_both_password_keys_missing_is_an_error_ssh_keys_do_not_replace_it(tmp_path):
    text = re.sub(r"root-password-hashed = .*\n", "", BASE)
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(_answer(tmp_path, text))
    assert codes(caught.value.findings) == [("installer-password-missing", "global", 2)]


@pytest.mark.parametrize("length, ok", [(7, False), (8, True), (64, True), (65, True),
                                        (1000, True)])
def test_root_password_length_bounds(tmp_path, length, ok):
    text = BASE.replace('root-password-hashed = "$6$rounds=5000$saltsalt$',
                        f'root-password = "{"x" * length}"\n# "')
    if ok:
        assert installer_answer.validate_file(_answer(tmp_path, text)) == []
    else:
        with pytest.raises(ValidationFailed) as caught:
            installer_answer.validate_file(_answer(tmp_path, text))
        assert caught.value.findings[0].payload["length"] == length


def test_warnings_do_not_fail(tmp_path, capsys):
    text = BASE.replace('gateway = "10.0.10.1"', 'gateway = "10.0.99.1"').replace(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3 ops@example.com", "my laptop key")
    path = _answer(tmp_path, text)
    found = installer_answer.validate_file(path)
    assert [(f.code, f.subject, f.payload.get("line")) for f in found] == [
        ("installer-ssh-key-suspicious", "global.root-ssh-keys[0]", 9),
        ("installer-gateway-off-subnet", "network.gateway", 16),
    ]
    assert found[1].payload["network"] == "10.0.10.0/24"
    assert main(["iso", "validate-answer", str(path)]) == 0
    assert "[installer-gateway-off-subnet]" in capsys.readouterr().err


def test_unreadable_and_non_toml_files_are_user_errors(tmp_path, capsys):
    assert main(["iso", "validate-answer", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = _answer(tmp_path, "[global\n")
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(bad)
    assert codes(caught.value.findings) == [("installer-toml-invalid", None, 1)]


def test_upper_case_raid_levels_are_accepted_as_the_installer_does(tmp_path):
    text = BASE.replace('zfs.raid = "raid1"', 'zfs.raid = "RAID1"')
    assert installer_answer.validate_file(_answer(tmp_path, text)) == []


def test_fqdn_rules():
    assert installer_rules.fqdn_problem("pve1.example.com") is None
    assert installer_rules.fqdn_problem("a" * 63 + ".com") is None
    assert "no domain" in installer_rules.fqdn_problem("pve1")
    assert "numeric" in installer_rules.fqdn_problem("123.com")
    assert "invalid part" in installer_rules.fqdn_problem("a" * 64 + ".com")
    assert "too long" in installer_rules.fqdn_problem(("a" * 60 + ".") * 5 + "com")


# -- rendering -----------------------------------------------------------------------------------

def _render(node, settings=SETTINGS, **kw):
    return installer_answer.render_for(CLUSTER, node, settings, **kw)


def test_rendered_answer_for_each_node():
    docs = {n: tomllib.loads(_render(n).text) for n in ("pve1", "pve2", "pve3")}
    pve1 = docs["pve1"]
    assert pve1["global"] == {
        "keyboard": "dk", "country": "dk", "fqdn": "pve1.rack1.example.com",
        "mailto": "ops@example.com", "timezone": "Europe/Copenhagen",
        "root-password-hashed": HASH,
        "root-ssh-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJm8 ops@example.com"]}
    # pve1's plan puts its management address on vmbr0 over enp65s0f0: that NIC wins.
    assert pve1["network"] == {"source": "from-answer", "cidr": "10.19.0.11/24",
                               "dns": "10.19.0.2", "gateway": "10.19.0.1",
                               "filter": {"ID_NET_NAME": "enp65s0f0"}}
    assert pve1["disk-setup"] == {"filesystem": "zfs", "disk-list": ["sda", "sdb"],
                                  "zfs": {"raid": "raid1", "ashift": 12, "arc-max": 8192}}
    assert pve1["first-boot"] == {"source": "from-iso", "ordering": "fully-up"}
    assert docs["pve2"]["network"]["filter"] == {"ID_NET_NAME": "enp1s0"}
    assert docs["pve2"]["network"]["cidr"] == "10.19.0.12/24"
    assert docs["pve3"]["network"]["filter"] == {"ID_NET_NAME": "eno1"}
    assert docs["pve3"]["disk-setup"] == {"filesystem": "ext4",
                                          "filter": {"ID_SERIAL": "*SAMSUNG*"},
                                          "lvm": {"hdsize": 100, "swapsize": 8}}


@pytest.mark.parametrize("ours, theirs", [("da", "dk"), ("ja", "jp"), ("sv", "se"),
                                          ("sl", "si"), ("de-ch", "de-ch")])
def test_keyboard_is_spelled_the_installer_way(ours, theirs):
    assert keyboard_for_installer(ours) == theirs


def test_rendered_answer_passes_the_same_rules_and_the_cli_prints_it(tmp_path, capsys):
    assert main(["iso", "answer", "--answers", str(CLUSTER), "--node", "pve2",
                 "--installer", str(SETTINGS)]) == 0
    out = capsys.readouterr().out
    assert out == _render("pve2").text
    target = tmp_path / "pve2-answer.toml"
    assert main(["iso", "answer", "--answers", str(CLUSTER), "--node", "pve2",
                 "--installer", str(SETTINGS), "--out", str(target)]) == 0
    assert target.read_text() == out
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert installer_answer.validate_file(target) == []


def test_missing_settings_are_named_by_answer_key_and_setting(tmp_path):
    settings = tmp_path / "installer.toml"
    settings.write_text('[installer]\ncountry = "dk"\nroot_password_hashed = "%s"\n' % HASH)
    with pytest.raises(ValidationFailed) as caught:
        _render("pve2", settings)
    got = {(f.code, f.subject): f.payload.get("from") for f in caught.value.findings}
    assert got == {
        ("installer-key-missing", "global.fqdn"): f"{settings}: installer.domain",
        ("installer-key-missing", "global.mailto"): f"{settings}: installer.mailto",
        ("installer-key-missing", "global.timezone"): f"{settings}: installer.timezone",
        ("installer-key-missing", "network.dns"): f"{settings}: installer.dns",
        ("installer-key-missing", "network.gateway"): f"{settings}: installer.gateway",
        ("installer-key-missing", "network.filter"): f"{settings}: installer.network_filter",
        ("installer-key-missing", "disk-setup.filesystem"): f"{settings}: installer.disk",
        ("installer-disks-missing", "disk-setup"): f"{settings}: installer.disk",
    }


def test_a_bad_setting_is_named_by_the_node_override_that_set_it_and_its_line(tmp_path):
    settings = tmp_path / "installer.toml"
    text = SETTINGS.read_text().replace('[installer.nodes.pve2]\n',
                                        '[installer.nodes.pve2]\ncountry = "Danmark"\n')
    settings.write_text(text)
    for node in ("pve2", "pve1"):  # the file is checked as a whole, whichever node is built
        with pytest.raises(ValidationFailed) as caught:
            _render(node, settings)
        assert codes(caught.value.findings) == [
            ("installer-country-invalid", "installer.nodes.pve2.country",
             text.split("\n").index('country = "Danmark"') + 1)]
        assert caught.value.findings[0].payload["nodes"] == ["pve2"]


def test_a_node_without_a_management_address_is_blamed_on_the_cluster_file(tmp_path):
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(CLUSTER.read_text().replace('management = "10.19.0.12/24"\n', ""))
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.render_for(cluster, "pve2", SETTINGS)
    (finding,) = caught.value.findings
    assert (finding.code, finding.subject) == ("installer-key-missing", "network.cidr")
    assert finding.payload["from"] == "cluster answer file: nodes[1].management"


def test_settings_file_problems_name_key_and_line(tmp_path):
    settings = tmp_path / "installer.toml"
    settings.write_text('[installer]\ncountry = "dk"\ntime_zone = "UTC"\n'
                        'network-filter = { ID_NET_NAME = "eno1" }\n'
                        '[installer.disk]\nfilesystem = "reiserfs"\n'
                        '[installer.nodes.pve9]\ncountry = "de"\n')
    plan = load(CLUSTER)
    with pytest.raises(ValidationFailed) as caught:
        installer_validate.load(settings, plan, "pve1")
    assert codes(caught.value.findings) == [
        ("installer-settings-key-unknown", "installer.time_zone", 3),
        ("installer-settings-key-misspelled", "installer.network-filter", 4),
        ("installer-settings-value-invalid", "installer.disk.filesystem", 6),
        ("installer-settings-node-unknown", "installer.nodes.pve9", 7),
    ]
    assert caught.value.findings[0].payload["suggestion"] == "timezone"


def test_unknown_node_is_refused(capsys):
    assert main(["iso", "answer", "--answers", str(CLUSTER), "--node", "pve7",
                 "--installer", str(SETTINGS)]) == 2
    assert "pve1, pve2, pve3" in capsys.readouterr().err


# -- the root password ---------------------------------------------------------------------------

def _no_hash_settings(tmp_path, extra=""):
    path = tmp_path / "installer.toml"
    path.write_text(re.sub(r"root_password_hashed = .*\n", extra, SETTINGS.read_text()))
    return path


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_password_from_a_file_is_hashed_and_never_written(tmp_path):
    secret = "Very-Secret-Root-Pw-42"
    pw = tmp_path / "root-pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    settings = _no_hash_settings(tmp_path)
    text = _render("pve1", settings, password_file=str(pw)).text
    hashed = tomllib.loads(text)["global"]["root-password-hashed"]
    assert secret not in text
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input=secret + "\n", capture_output=True, text=True, check=True)
    assert again.stdout.strip() == hashed


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_long_root_password_is_taken_the_installer_has_no_maximum(tmp_path):
    secret = "correct horse battery staple " * 8  # 232 characters
    pw = tmp_path / "root-pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    text = _render("pve1", _no_hash_settings(tmp_path), password_file=str(pw)).text
    hashed = tomllib.loads(text)["global"]["root-password-hashed"]
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input=secret + "\n", capture_output=True, text=True, check=True)
    assert again.stdout.strip() == hashed


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_password_from_the_environment_named_in_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PVESTRAP_TEST_ROOT_PW", "from-the-env-123")
    settings = _no_hash_settings(tmp_path, 'root_password_env = "PVESTRAP_TEST_ROOT_PW"\n')
    text = _render("pve1", settings).text
    assert tomllib.loads(text)["global"]["root-password-hashed"].startswith("$6$")
    assert "from-the-env-123" not in text


def test_password_file_readable_by_others_is_refused(tmp_path):
    pw = tmp_path / "root-pw"
    pw.write_text("Very-Secret-Root-Pw-42\n")
    pw.chmod(0o644)
    with pytest.raises(UserError) as caught:
        _render("pve1", _no_hash_settings(tmp_path), password_file=str(pw))
    assert caught.value.code == "password-file-insecure"


def test_short_clear_password_is_refused_before_hashing(tmp_path):
    pw = tmp_path / "root-pw"
    pw.write_text("short\n")
    pw.chmod(0o600)
    with pytest.raises(UserError) as caught:
        _render("pve1", _no_hash_settings(tmp_path), password_file=str(pw))
    assert caught.value.code == "installer-password-length"


def test_two_password_sources_at_one_level_are_refused(tmp_path):
    settings = tmp_path / "installer.toml"
    settings.write_text(SETTINGS.read_text().replace(
        "root_ssh_keys", 'root_password_env = "X"\nroot_ssh_keys'))
    with pytest.raises(UserError) as caught:
        _render("pve1", settings)
    assert caught.value.code == "installer-password-conflict"


def test_no_password_source_fails_on_the_installer_rule(tmp_path):
    with pytest.raises(ValidationFailed) as caught:
        _render("pve1", _no_hash_settings(tmp_path))
    (finding,) = caught.value.findings
    assert (finding.code, finding.subject) == ("installer-password-missing", "global")


def test_inspect_masking_hides_the_hash_and_keeps_the_rest():
    text = _render("pve1").text
    masked = installer_answer.mask_secrets(text)
    assert HASH not in masked
    assert 'root-password-hashed = "<redacted>"' in masked
    assert masked.replace('"<redacted>"', f'"{HASH}"') == text


def test_a_node_override_of_the_disks_is_named_for_their_problem(tmp_path):
    settings = tmp_path / "installer.toml"
    text = SETTINGS.read_text().replace('filter = { ID_SERIAL = "*SAMSUNG*" }',
                                        'disk_list = ["sda", "sdb"]')
    settings.write_text(text)
    with pytest.raises(ValidationFailed) as caught:
        _render("pve3", settings)
    assert codes(caught.value.findings) == [
        ("installer-disks-too-many", "installer.nodes.pve3.disk.disk_list",
         text.split("\n").index('disk_list = ["sda", "sdb"]', 15) + 1)]


def test_a_problem_made_of_both_files_is_blamed_at_render_on_the_cluster_setting(tmp_path):
    """The cluster file alone is fine and so is the file's override alone: only together do
    two zfs disks meet ext4, which `iso answer` names by the cluster file's key."""
    cluster = _one_file(tmp_path)
    settings = tmp_path / "override.toml"
    settings.write_text('[installer]\nroot_password_hashed = "%s"\n'
                        '[installer.nodes.pve2.disk]\nfilesystem = "ext4"\n' % HASH)
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.render_for(cluster, "pve2", settings)
    (finding,) = caught.value.findings
    assert (finding.code, finding.subject) == ("installer-disks-too-many", "disk-setup.disk-list")
    assert finding.payload["from"] == "cluster answer file: installer.disk.disk_list"


# -- one file for the rack: [installer] in the cluster answer file -------------------------------

def _one_file(tmp_path, edit=lambda text: text):
    """cluster.toml with installer.toml's settings (all but the password hash) inside it."""
    settings = re.sub(r"root_password_hashed = .*\n", "", SETTINGS.read_text())
    path = tmp_path / "rack.toml"
    path.write_text(edit(CLUSTER.read_text() + "\n" + settings))
    return path


def _hash_only(tmp_path):
    path = tmp_path / "hash.toml"
    path.write_text('[installer]\nroot_password_hashed = "%s"\n' % HASH)
    return path


def test_the_cluster_file_alone_gives_the_same_answers_as_the_two_files(tmp_path, capsys):
    rack, hash_only = _one_file(tmp_path), _hash_only(tmp_path)
    plan = load(rack)
    assert plan.installer["disk"]["zfs"]["arc_max"] == 8192
    assert plan.installer["nodes"]["pve3"]["disk"]["filter"] == {"ID_SERIAL": "*SAMSUNG*"}
    for node in ("pve1", "pve2", "pve3"):
        assert main(["iso", "answer", "--answers", str(rack), "--node", node,
                     "--installer", str(hash_only)]) == 0
        one = capsys.readouterr().out
        assert tomllib.loads(one) == tomllib.loads(_render(node).text)
        path = tmp_path / f"{node}.toml"
        path.write_text(one)
        assert installer_answer.validate_file(path) == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_cluster_file_alone_with_the_password_as_a_build_option(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("PVESTRAP_TEST_ROOT_PW", "from-the-env-123")
    rack = _one_file(tmp_path)
    assert main(["iso", "answer", "--answers", str(rack), "--node", "pve3",
                 "--root-password-env", "PVESTRAP_TEST_ROOT_PW"]) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["global"]["root-password-hashed"].startswith("$6$")
    assert doc["disk-setup"] == {"filesystem": "ext4", "filter": {"ID_SERIAL": "*SAMSUNG*"},
                                 "lvm": {"hdsize": 100, "swapsize": 8}}


def test_without_any_settings_the_missing_ones_point_to_the_cluster_file():
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.render_for(CLUSTER, "pve2", None)
    got = {f.subject: f.payload.get("from") for f in caught.value.findings}
    assert got["global.mailto"] == "cluster answer file: installer.mailto"
    assert got["disk-setup"] == "cluster answer file: installer.disk"


def test_the_file_wins_over_the_cluster_file_key_by_key(tmp_path):
    rack = _one_file(tmp_path, lambda text: text.replace(
        '[installer.nodes.pve2]\n', '[installer.nodes.pve2]\ncountry = "se"\n'))
    override = tmp_path / "override.toml"
    override.write_text('[installer]\ncountry = "no"\nroot_password_hashed = "%s"\n'
                        '[installer.nodes.pve3]\ntimezone = "Europe/Oslo"\n'
                        '[installer.nodes.pve3.disk]\nfilesystem = "xfs"\n'
                        'disk_list = ["nvme0n1"]\n' % HASH)
    plan = load(rack)
    settings = {n: installer_validate.load(override, plan, n) for n in ("pve1", "pve2", "pve3")}
    # the file's shared country beats even the cluster file's own node override
    assert {n: s.get("country") for n, s in settings.items()} == dict.fromkeys(settings, "no")
    assert settings["pve2"].origin("country") == f"{override}: installer.country"
    assert settings["pve3"].get("timezone") == "Europe/Oslo"
    assert settings["pve1"].origin("timezone") == "cluster answer file: installer.timezone"
    # a filesystem and disks chosen later replace the earlier choice and its options
    assert settings["pve3"].get("disk") == {"filesystem": "xfs", "disk_list": ("nvme0n1",)}
    assert settings["pve1"].get("disk")["zfs"] == {"raid": "raid1", "ashift": 12, "arc_max": 8192}
    doc = tomllib.loads(installer_answer.render_for(rack, "pve3", override).text)
    assert doc["disk-setup"] == {"filesystem": "xfs", "disk-list": ["nvme0n1"]}
    assert doc["global"]["timezone"] == "Europe/Oslo" and doc["global"]["country"] == "no"


def test_a_node_without_management_is_named_when_the_cluster_file_has_installer(tmp_path):
    text = _one_file(tmp_path).read_text().replace('management = "10.19.0.12/24"\n', "")
    with pytest.raises(ValidationFailed) as caught:
        load_text(text)
    assert codes(caught.value.findings) == [
        ("installer-management-missing", "nodes[1].management",  # at its [[nodes]] line
         text.split("\n").index('name = "pve2"'))]
    dhcp = text.replace('[installer.nodes.pve2]\n',
                        '[installer.nodes.pve2]\nnetwork_source = "from-dhcp"\n')
    assert load_text(dhcp).installer["nodes"]["pve2"]["network_source"] == "from-dhcp"


def load_text(text):
    from pvestrap.answers import loads

    return loads(text, "rack.toml")


def test_every_installer_setting_renders_to_an_answer_key_of_the_same_type():
    """The format's installer keys name their answer.toml key; its enum and range are taken
    from there, so the two formats cannot drift apart."""
    def walk(keys):
        for key in keys:
            yield key
            yield from walk(key.children)

    targets = [k for k in walk(INSTALLER_KEYS)]
    assert all(k.target for k in targets)
    for key in targets:
        field = installer_rules.key_at(key.target)
        expected = "string-or-table" if key.name == "domain" else key.kind
        assert field.kind == expected, key.name
        if field.rule("enum") and key.name != "keyboard":
            assert key.rule("enum") == list(field.rule("enum"))
    assert dict(next(k for k in targets if k.name == "ashift").rules) == {
        "minimum": 0, "maximum": 2**32 - 1}  # a u32: the installer checks no other bound


@pytest.mark.parametrize("version", ["3.11", "3.13"])
def test_the_hook_loads_a_cluster_file_with_installer_settings_on_a_plain_python(
        tmp_path, version):
    """At first boot the node loads the same file, [installer] checks included, with only
    what the hook carries."""
    from pvestrap.iso import hook as iso_hook

    candidates = [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                  *sorted(pathlib.Path("/root/.pyenv/versions").glob(
                      f"{version}.*/bin/python{version}"))]
    python = next((str(c) for c in candidates if pathlib.Path(c).exists()), None)
    if python is None:
        pytest.skip(f"python {version} is not installed here")
    rack = _one_file(tmp_path)
    hook = tmp_path / "proxmox-first-boot"
    built = iso_hook.build(rack)
    iso_hook.write(built, hook)
    assert {"pvestrap.installer.settings", "pvestrap.installer.rules",
            "pvestrap.installer.validate"} <= set(built.modules)
    done = subprocess.run([python, str(hook), "--selftest", "--state-dir", str(tmp_path / "s")],
                          cwd=tmp_path, env={}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["failed"] == {} and report["outside_archive"] == []
    assert report["nodes"] == ["pve1", "pve2", "pve3"]


def test_an_unset_password_variable_is_named_by_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("PVESTRAP_TEST_UNSET_PW", raising=False)
    with pytest.raises(UserError) as caught:
        installer_answer.render_for(_one_file(tmp_path), "pve1",
                                    password_env="PVESTRAP_TEST_UNSET_PW")
    assert caught.value.code == "password-missing"
    assert "(--root-password-env)" in caught.value.message


# -- no stricter than the installer ----------------------------------------------------------------

_SNAKE = [("root-password-hashed = ", "root_password_hashed = "),
          ("root-ssh-keys = ", "root_ssh_keys = "), ("reboot-on-error = ", "reboot_on_error = "),
          ("disk-list = ", "disk_list = "), ("zfs.arc-max = ", "zfs.arc_max = ")]


def test_snake_case_keys_the_installer_still_reads_are_accepted_with_its_warning(tmp_path,
                                                                                 capsys):
    """proxmox-installer-types keeps serde aliases for these (its `legacy` feature);
    Proxmox's validate-answer warns "deprecated key ..., use ... instead" for each."""
    text = BASE
    for kebab, snake in _SNAKE:
        assert kebab in text
        text = text.replace(kebab, snake, 1)
    path = _answer(tmp_path, text)
    found = installer_answer.validate_file(path)
    assert [(f.code, f.severity.value, f.payload["suggestion"]) for f in found] == [
        ("installer-key-deprecated", "warn", kebab.split(".")[-1].split(" ")[0])
        for kebab, _ in _SNAKE]
    assert main(["iso", "validate-answer", str(path)]) == 0
    err = capsys.readouterr().err
    assert "'root_password_hashed' is a deprecated spelling; use 'root-password-hashed'" in err


def test_a_snake_case_password_key_is_not_also_a_missing_password(tmp_path):
    text = BASE.replace('root-password-hashed = "$6$rounds=5000$saltsalt$',
                        'root_password = "long-enough"\n# "')
    found = installer_answer.validate_file(_answer(tmp_path, text))
    assert [(f.code, f.subject) for f in found] == [("installer-key-deprecated",
                                                     "global.root_password")]


@pytest.mark.parametrize("old, new, expected", [
    # one message per problem: a refused value is not also a missing key
    ('root-password-hashed = "$6$rounds=5000$saltsalt$', 'root-password-hashed = 5\n# "',
     [("installer-type-invalid", "global.root-password-hashed")]),
    ('disk-list = ["sda", "sdb"]', 'disk-list = "sda"',
     [("installer-type-invalid", "disk-setup.disk-list")]),
    ('dns = "10.0.10.1"', "dns = 10", [("installer-type-invalid", "network.dns")]),
    # both spellings of one key: serde refuses the duplicate field
    ("reboot-on-error = false", "reboot-on-error = false\nreboot_on_error = true",
     [("installer-key-duplicate", "global.reboot_on_error")]),
    # snake_case the installer has no alias for: refused, once
    ("[first-boot]", "[first_boot]", [("installer-key-misspelled", "first_boot")]),
])
def test_one_message_per_real_problem(tmp_path, old, new, expected):
    assert old in BASE
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(_answer(tmp_path, BASE.replace(old, new, 1)))
    assert [(f.code, f.subject) for f in caught.value.findings] == expected


@pytest.mark.parametrize("line", ["zfs.ashift = 17", "zfs.ashift = 0", "zfs.copies = 4",
                                  "zfs.arc-max = 1", "zfs.hdsize = 1.5", "zfs.hdsize = -3"])
def test_no_zfs_bounds_the_installer_does_not_check(tmp_path, line):
    """Only their types bound them (u32, f64): the ranges of proxmox-installer-types' API
    schema are not applied when the installer reads answer.toml."""
    text = BASE.replace("zfs.ashift = 12\n", "").replace("zfs.arc-max = 4096\n", "")
    text = text.replace('zfs.raid = "raid1"', f'zfs.raid = "raid1"\n{line}')
    assert installer_answer.validate_file(_answer(tmp_path, text)) == []


def test_a_hash_the_installer_takes_as_is_is_a_warning(tmp_path):
    text = BASE.replace('root-password-hashed = "$6$rounds', 'root-password-hashed = "rounds')
    found = installer_answer.validate_file(_answer(tmp_path, text))
    assert [(f.code, f.severity.value, f.subject) for f in found] == [
        ("installer-password-hash-suspicious", "warn", "global.root-password-hashed")]


def test_an_integer_outside_u32_is_refused(tmp_path):
    text = BASE.replace("zfs.ashift = 12", "zfs.ashift = 4294967296")
    with pytest.raises(ValidationFailed) as caught:
        installer_answer.validate_file(_answer(tmp_path, text))
    assert [(f.code, f.subject) for f in caught.value.findings] == [
        ("installer-value-out-of-range", "disk-setup.zfs.ashift")]


def test_the_hook_help_names_the_stages_the_units_pass():
    """pve-installer's proxmox-first-boot-{network-pre,network-online,multi-user}.service run
    the hook with before-network, network-online and fully-up: the [first-boot] orderings."""
    from pvestrap.iso import hook_main

    assert hook_main.STAGES == installer_rules.ORDERINGS
    help_text = " ".join(hook_main._parser().format_help().split())
    assert all(stage in help_text for stage in hook_main.STAGES)
    assert "network-pre" not in help_text and "multi-user" not in help_text
