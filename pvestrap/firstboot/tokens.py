"""The probe tokens of the first boot's stages, all derived from the cluster's first-boot secret.

Progress is told by probe: `probe` (I am here: the preflight's probes), `checked` (my local
checks ran: my preflight probes once every peer's did), `ready` (my preflight passed) and
`member` (I have created or joined). Each stage is one more token this
node's responder answers (presence.Presence.announce); the others wait for it by probing
(waiting.wait_for_stage).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pvestrap.checks.probe import Token

STAGES = {"checked": "checked (its local checks ran)", "ready": "ready (its preflight passed)",
          "member": "a member of the cluster"}


@dataclass(frozen=True)
class Tokens:
    probe: Token   # "I am here": the preflight's probes
    checked: Token  # "my local checks ran": what every node waits for before it probes
    ready: Token   # "my preflight passed": what the creating node waits for
    member: Token  # "I am a member of the cluster": what a joiner's successor waits for

    def stage(self, name: str) -> Token:
        return {"checked": self.checked, "ready": self.ready, "member": self.member}[name]


def derive_tokens(secret: bytes) -> Tokens:
    """The four tokens from the cluster's first-boot secret (secret.py), which every node
    of the cluster has, root-only, and nobody else does. Never the answer file: it is
    world-readable on the nodes. HMAC with a fixed label per purpose keeps the tokens apart
    and the secret out of them.
    """
    def one(label: bytes) -> Token:
        return Token(hmac.new(secret, b"pvestrap-firstboot/" + label,
                              hashlib.sha256).hexdigest().encode())

    return Tokens(probe=one(b"probe"), checked=one(b"checked"), ready=one(b"ready"),
                  member=one(b"member"))
