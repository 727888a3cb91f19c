# gpufab's shell library: the pieces more than one remote program uses.
# core/programs.py sends, with each program, the functions it calls (and those
# they call). A function starts with `name() {` and ends with a lone `}` line.

# gpu_count SECONDS: the number of GPUs `nvidia-smi -L` lists (0 without nvidia-smi), or
# `nvidia-smi hung (SECONDS s)` when it does not answer within SECONDS.
gpu_count() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    gc_out=$(timeout -k 5 "$1" nvidia-smi -L 2>/dev/null); gc_rc=$?
    if [ $gc_rc = 124 ] || [ $gc_rc = 137 ]; then echo "nvidia-smi hung (${1}s)"
    else printf '%s\n' "$gc_out" | grep -c '^GPU'; fi
  else echo 0; fi
}

# nic_toward ADDRESS: the interface the kernel routes ADDRESS over; on the host that holds
# ADDRESS (routed via lo), the interface holding it. Empty when there is no route.
nic_toward() {
  nt_nic=$(ip -o route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  if [ "$nt_nic" = lo ]; then nt_nic=$(ip -o addr show to "$1" 2>/dev/null | awk '{print $2; exit}'); fi
  echo "$nt_nic"
}

# ib_ports SYSFS GIDS: one line per InfiniBand port under SYSFS (/sys/class/infiniband), then
# its first GIDS RoCE GIDs; then whether libibverbs is present (NCCL dlopens it). Lines:
# `ibport=DEV PORT|STATE|LINK_LAYER|RATE|NETDEVS|PHYS_STATE|VF`, `ibgid=DEV PORT INDEX|TYPE|GID`,
# `verbs=yes|no`. VF is `vf` for an SR-IOV virtual function (a cloud's VM NIC).
ib_ports() {
  for p in "$1"/*/ports/*; do
    [ -r "$p/state" ] || continue
    dev=${p%/ports/*}; dev=${dev##*/}; port=${p##*/}
    # shellcheck disable=SC2012 # netdev names: no newline in them
    nets=$(ls "$1/$dev/device/net" 2>/dev/null | tr '\n' ' ')
    vf=; [ -e "$1/$dev/device/physfn" ] && vf=vf
    echo "ibport=$dev $port|$(cat "$p/state" 2>/dev/null)|$(cat "$p/link_layer" 2>/dev/null)|$(cat "$p/rate" 2>/dev/null)|$nets|$(cat "$p/phys_state" 2>/dev/null)|$vf"
    if [ "$(cat "$p/link_layer" 2>/dev/null)" = Ethernet ]; then
      i=0
      while [ $i -lt "$2" ]; do
        t=$(cat "$p/gid_attrs/types/$i" 2>/dev/null) && g=$(cat "$p/gids/$i" 2>/dev/null) && echo "ibgid=$dev $port $i|$t|$g"
        i=$((i + 1))
      done
    fi
  done
  if ldconfig -p 2>/dev/null | grep -q 'libibverbs\.so\.1 '; then echo verbs=yes; else echo verbs=no; fi
}

# proc_cmdline PID: the command line of process PID, its arguments joined by spaces (empty when gone).
proc_cmdline() {
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null
}

# proc_runs PID TEXT: true while process PID runs a command line that contains TEXT.
proc_runs() {
  proc_cmdline "$1" | grep -qF "$2"
}

# systemd_runs: true where systemd manages the host and systemd-run is there.
systemd_runs() {
  [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1
}

# as_user USER COMMAND...: COMMAND as USER (root runs it itself, without runuser).
as_user() {
  au_user=$1; shift
  if [ "$au_user" = root ]; then "$@"; else runuser -u "$au_user" -- "$@"; fi
}

# start_detached UNIT USER HOME COMMAND...: COMMAND as USER in HOME, outside this SSH session: a
# transient systemd unit UNIT where systemd runs, else `nohup setsid` in the background (then $!
# is its PID). Sets `started` to `systemd` or `nohup`; fails when systemd-run does.
start_detached() {
  sd_unit=$1 sd_user=$2 sd_home=$3; shift 3
  if systemd_runs; then
    # shellcheck disable=SC2034 # the caller's
    started="systemd"
    systemd-run --quiet --collect --unit="$sd_unit" --uid="$sd_user" -p WorkingDirectory="$sd_home" "$@"
  else
    # shellcheck disable=SC2034
    started="nohup"
    cd "$sd_home" 2>/dev/null || cd /
    if [ "$sd_user" = root ]; then nohup setsid "$@" >/dev/null 2>&1 </dev/null &
    else nohup setsid runuser -u "$sd_user" -- "$@" >/dev/null 2>&1 </dev/null &
    fi
  fi
}

# load_netenv: netenv.setup's settings (/etc/gpufab/netenv.env: NCCL's NIC, MASTER_ADDR ...) exported
# into this shell where the node has them, for the job that follows; a node without them goes on
# without. One line of code: a job's command line (what `ps` and run.list show) takes it as it is
# (programs.inline), where a definition would break that line in lines.
load_netenv() {
  # shellcheck source=/dev/null # the node's own
  if [ -r /etc/gpufab/netenv.env ]; then set -a; . /etc/gpufab/netenv.env; set +a; fi
}

# find_dockerd: dockerd's path (also where a login's PATH has no sbin); fails without it.
find_dockerd() {
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v dockerd
}
