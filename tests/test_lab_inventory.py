"""`pvestrap lab inventory`: how a lab's nodes are split into cluster groups (no lab needed)."""

import pytest

from pvestrap.errors import UserError
from pvestrap.lab.inventory import group_name, split


def test_nodes_split_in_order_into_near_equal_groups():
    assert split(6, 2) == [[1, 2, 3], [4, 5, 6]]
    assert split(7, 3) == [[1, 2, 3], [4, 5], [6, 7]]
    assert split(3, 1) == [[1, 2, 3]]


@pytest.mark.parametrize("clusters", [0, 4])
def test_more_clusters_than_nodes_is_refused(clusters):
    with pytest.raises(UserError) as caught:
        split(3, clusters)
    assert caught.value.code == "lab-clusters-invalid"


def test_group_names_are_ansible_identifiers():
    assert group_name("lab-1", 2, 3) == "lab_1_c2"
    assert group_name("lab", 1, 1) == "lab"
