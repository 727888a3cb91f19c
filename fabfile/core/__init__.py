"""The mechanics every step shares and none knows: inventory, connections, remote, fan-out, files, reports."""
