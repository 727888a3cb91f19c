"""What comes from each step's declaration (issue 34, the step contract).

- The report's columns stand in chain order, and within a step in the order it declares them:
  no hand-set numbers to keep unique across modules.
"""

from __future__ import annotations

from fabfile.core.chain import columns_of
from fabfile.core.inventory import parse_inventory
from fabfile.ops import scripts
from fabfile.ops.chain import CHAIN

#: The report's step columns with the real chain: preflight's two, then each step's in chain order.
TABLE = [("nic", "NIC"), ("gpus", "GPUs"), ("ulimit", "ulimit"), ("docker", "Docker"), ("images", "Images"),
         ("containers", "Containers"), ("mesh", "SSH mesh"), ("nfs", "Storage"), ("ray", "Ray")]


def test_the_report_columns_stand_in_chain_order_and_as_each_step_declares_them():
    assert [(c.key, c.title) for _, c in columns_of(CHAIN)] == TABLE
    assert [c.key for _, c in columns_of(CHAIN)] == [c.key for s in CHAIN for c in s.columns]


def test_your_steps_column_stands_where_the_first_of_your_steps_does(tmp_path):
    text = ("nodes:\n  - {name: node1, public: 203.0.113.1, private: 10.0.0.1}\n"
            "steps:\n  - {name: warm, command: 'true', after: docker}\n  - {name: last, command: 'true'}\n")
    chain = scripts.with_user_steps(CHAIN, parse_inventory(text, str(tmp_path / "hosts.yaml")))
    owners, columns = zip(*columns_of(chain))
    keys = [c.key for c in columns]
    assert keys == ["nic", "gpus", "ulimit", "docker", "steps", "images", "containers", "mesh", "nfs", "ray"]
    assert owners[keys.index("steps")] == ["warm", "last"]  # one column for all of them
