head=$1; raypy=$2; T=$3; ib_known=$4
# shellcheck source=/dev/null # the node's own
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -r)"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "driver=$(timeout -k 2 "$T" nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)"
  echo "cuda=$(timeout -k 2 "$T" nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)"
  timeout -k 2 "$T" nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/gpu=/'
fi
nic=$(sed -n 's/^NCCL_SOCKET_IFNAME=//p' "$env_file" 2>/dev/null)
if [ -z "$nic" ] && [ -n "$head" ]; then
  nic=$(nic_toward "$head")
fi
if [ -n "$nic" ]; then
  echo "nic=$nic"
  echo "speed=$(cat "/sys/class/net/$nic/speed" 2>/dev/null)"
  echo "mtu=$(cat "/sys/class/net/$nic/mtu" 2>/dev/null || ip -o link show "$nic" 2>/dev/null | sed -n 's/.* mtu \([0-9]*\).*/\1/p')"
fi
if command -v docker >/dev/null 2>&1; then echo "docker=$(docker --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\).*/\1/p')"; fi
if [ -x "$raypy" ]; then
  echo "ray=$(timeout -k 2 60 "$raypy" -c 'from importlib.metadata import version; print(version("ray"))' 2>/dev/null)"
fi
if [ -z "$ib_known" ]; then ib_ports "$ib_sysfs" "$ib_gids"; fi
