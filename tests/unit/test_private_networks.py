"""What an export or a dashboard may be opened to: private ranges, the inventory's own, or a loud override."""

from __future__ import annotations

import pytest

from fabfile.core.errors import InputError
from fabfile.core.networks import Reach, check_bind_address, check_network, read_reach



LAB = read_reach(["198.18.0.0/15"], None)


@pytest.mark.parametrize("cidr", ["0.0.0.0/1", "203.0.113.0/24", "8.8.8.0/24", "198.19.0.0/24", "2001:db8::/64"])
def test_exports_to_public_ranges_are_refused(cidr):
    with pytest.raises(InputError, match="not a private range"):
        check_network(cidr, "the NFS export /mnt/shared", Reach())


def test_private_and_named_ranges_are_accepted_and_the_override_is_a_warning():
    assert check_network("10.1.2.0/24", "x", Reach()) == ("10.1.2.0/24", None)
    assert check_network("100.64.3.7/16", "x", Reach()) == ("100.64.0.0/16", None)
    assert check_network("198.19.0.0/24", "x", LAB) == ("198.19.0.0/24", None)
    with pytest.raises(InputError, match="every address"):
        check_network("0.0.0.0/0", "x", read_reach(None, True))
    net, warning = check_network("203.0.113.0/24", "the NFS export", read_reach(None, True))
    assert net == "203.0.113.0/24" and "not private" in warning


@pytest.mark.parametrize("value", ["0.0.0.0", "203.0.113.9", "10.0.0.1\nExecStartPre=/bin/id", "10.0.0.1; id",
                                   "$(id)", "head", ""])
def test_a_public_or_malformed_dashboard_host_is_refused(value):
    with pytest.raises(InputError, match="ray_dashboard_host"):
        check_bind_address(value, "Ray's dashboard", LAB, "ray_dashboard_host")


def test_private_and_loopback_dashboard_hosts_pass():
    assert check_bind_address("127.0.0.1", "d", Reach(), "o") == ("127.0.0.1", None)
    assert check_bind_address("198.19.0.11", "d", LAB, "o") == ("198.19.0.11", None)
    assert check_bind_address("0.0.0.0", "d", read_reach(None, "true"), "o")[1].startswith("d listens on every")


@pytest.mark.parametrize("extra,allow", [("10.0.0.0/33", None), ({"a": 1}, None), (None, "maybe")])
def test_bad_reach_settings_are_named(extra, allow):
    with pytest.raises(InputError):
        read_reach(extra, allow)
