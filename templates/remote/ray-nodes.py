import json, sys
from ray.util.state import list_nodes
nodes = list_nodes(address=sys.argv[1], limit=10000, raise_on_missing_output=False)
print(json.dumps([{
    "ip": n.node_ip, "state": n.state, "head": bool(n.is_head_node),
    "resources": n.resources_total or {},
} for n in nodes]))
