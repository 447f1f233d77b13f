"""The member's join lock is a lease (pvestrap.apply.remote): a joiner that vanishes mid-join
(its network cut with nftables, as a power loss looks to the member) frees the member within
LOCK_LEASE_S, and a second joiner gets in; before the cut the lock holds. Real sshd, ssh,
flock, perl and nftables in the lab."""

from __future__ import annotations

import pytest

from pvestrap.apply.remote import LOCK_LEASE_S, JoinLocked, Remote, member_lock
from pvestrap.lab.lab import Lab
from pvestrap.system import RealSystem

pytestmark = pytest.mark.lab


def node_system(lab: Lab, index: int) -> RealSystem:
    node = lab.node(index)
    return RealSystem(root=str(node.root), wrap=node.wrap)


def member_of(lab: Lab, index: int, member: str) -> Remote:
    return Remote(node_system(lab, index), member, connect_timeout=5)


def test_a_vanished_joiner_frees_the_member_within_the_lease(lab):
    three = lab(nodes=3, links=1)
    three.start("sshd")
    n1 = three.plan().nodes[0].addresses[0]
    with member_lock(node_system(three, 2), member_of(three, 2, n1), wait=5, retries=0):
        # n2 holds the lock and beats its heart: n3 waits past a whole lease and stays out.
        with pytest.raises(JoinLocked):
            with member_lock(node_system(three, 3), member_of(three, 3, n1),
                             wait=LOCK_LEASE_S + 5, retries=0):
                pass
        # n2 loses its network mid-join: no goodbye reaches n1, only the heartbeat stops.
        three.exec(2, ["nft", "add table inet cut; add chain inet cut c { type filter hook "
                       "output priority 0; policy drop; }; add chain inet cut i { type filter "
                       "hook input priority 0; policy drop; }"], check=True)
        # n3 gets in within the lease (flock -w is the bound: the lease plus ssh's start-up).
        with member_lock(node_system(three, 3), member_of(three, 3, n1),
                         wait=LOCK_LEASE_S + 10, retries=0) as control:
            assert control
