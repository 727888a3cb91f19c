head="$1"
# shellcheck source=/dev/null # the node's own
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "uid=$(id -u)"
echo "gpus=$(gpu_count "$smi_timeout")"
if [ -n "$head" ]; then
  echo "nic=$(nic_toward "$head")"
fi
echo "disk_free_kb=$(df -Pk / 2>/dev/null | awk 'NR==2 {print $4}')"
if [ "$(id -u)" = 0 ]; then echo "sudo=root"
elif ! command -v sudo >/dev/null 2>&1; then echo "sudo=missing"
elif sudo -n true 2>/dev/null; then echo "sudo=nopasswd"
else echo "sudo=password"
fi
