T=$1; deep=$2; image=$3; ib_known=$4
echo "@@lspci"
if command -v lspci >/dev/null 2>&1; then timeout -k 2 "$T" lspci -nn -d 10de: 2>/dev/null
else
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] && echo "pci=${d##*/} $(cat "$d/class") $(cat "$d/device")"
  done
fi
echo "@@smi"
if command -v nvidia-smi >/dev/null 2>&1; then timeout -k 5 "$T" nvidia-smi -q 2>&1; rc=$?; echo "@@smi-rc $rc"
  if [ "$rc" = 0 ]; then
    echo "@@topo"; timeout -k 2 "$T" nvidia-smi topo -m 2>/dev/null
    echo "@@nvlink"; timeout -k 2 "$T" nvidia-smi nvlink -s 2>/dev/null
  fi
else echo "@@smi-missing"; fi
echo "@@fm"
systemctl is-active nvidia-fabricmanager 2>/dev/null || true
echo "@@xid"
{ dmesg 2>/dev/null || journalctl -k -b --no-pager -q 2>/dev/null; } |
  grep -E 'NVRM: (Xid|GPU [0-9a-fA-F:.]+: (GPU has fallen off the bus|RmInitAdapter failed)|The NVIDIA GPU )|fallen off the bus|SXid \(' |
  tail -n 60
echo "@@docker"
if command -v docker >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
  # shellcheck disable=SC2016 # a Go template, not shell
  echo "runtimes=$(timeout -k 2 "$T" docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null)"
fi
command -v nvidia-ctk >/dev/null 2>&1 && echo ctk=yes
command -v nvidia-container-runtime-hook >/dev/null 2>&1 && echo hook=yes
if [ -z "$ib_known" ]; then echo "@@ib"; ib_ports "$ib_sysfs" "$ib_gids"; fi
if [ -n "$image" ] && command -v docker >/dev/null 2>&1 && timeout -k 2 "$T" nvidia-smi -L >/dev/null 2>&1; then
  echo "@@container"
  if docker image inspect "$image" >/dev/null 2>&1; then
    timeout -k 5 "$container_timeout" docker run --rm --gpus all "$image" nvidia-smi -L 2>&1 | tail -n 20
    echo "@@container-rc $?"
  else echo "@@container-noimage"; fi
fi
if [ "$deep" = 1 ]; then
  echo "@@dcgm"
  if command -v dcgmi >/dev/null 2>&1; then timeout -k 5 "$dcgm_timeout" dcgmi diag -r 1 2>&1; echo "@@dcgm-rc $?"
  else echo "@@dcgm-missing"; fi
fi
true
