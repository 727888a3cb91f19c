echo "route=$(ip -o route get "$1" 2>&1 | head -n1)"
echo "owner=$(ip -o -4 addr show to "$1" 2>/dev/null | awk '{print $2; exit}')"
echo "group=$(id -gn)"
echo "defroute=$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i+1); exit}}')"
ip -o -4 addr show | awk '{print "addr=" $2 " " $4}'
ip -o link show | awk -F': ' '{split($2, n, "@"); m = $0; sub(/.* mtu /, "", m); split(m, v, " "); print "link=" n[1] " " v[1]}'
if command -v ibv_devices >/dev/null 2>&1; then
  echo "hcas=$(ibv_devices 2>/dev/null | awk 'NR > 2 {printf "%s ", $1}')"
fi
# $2 `known`: the run has read the InfiniBand ports already.
if [ -z "$2" ]; then ib_ports "$ib_sysfs" "$ib_gids"; fi
