#!/bin/sh
# gpufab: runs one of your own setup steps on this node. Written by gpufab,
# the same on every node; your script is ./script and its variables ./env.
#
#   ./run          run the step now (what `bootstrap` does)
#   ./run --check  only say whether `creates:` / `unless:` would skip it
#
# The script sees the node's network settings and secrets (when gpufab wrote
# them), then ./env: NID, IHN, NODE_RANK, RAY_HEAD_IP ... and the step's env.
# Its output goes to ./log, its exit status to ./exit; it is ended after
# GPUFAB_TIMEOUT seconds (exit 124).
here=$(cd "$(dirname "$0")" && pwd)
set -a
if [ -r /etc/gpufab/netenv.env ]; then . /etc/gpufab/netenv.env; fi
if [ -r /etc/gpufab/secrets.env ]; then . /etc/gpufab/secrets.env; fi
. "$here/env"
set +a

# The NIC of the private network: netenv's, else the route to the head.
if [ -z "${NIC:-}" ]; then
  NIC=${NCCL_SOCKET_IFNAME:-$(ip -o route get "$HEAD_PRIVATE_IP" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')}
  if [ "$NIC" = lo ]; then NIC=$(ip -o addr show to "$HEAD_PRIVATE_IP" 2>/dev/null | awk '{print $2; exit}'); fi
  export NIC
fi
cd "$GPUFAB_WORKDIR" || exit 1

if [ -n "${GPUFAB_CREATES:-}" ] && [ -e "$GPUFAB_CREATES" ]; then
  echo "skip=creates"; exit 0
fi
if [ -n "${GPUFAB_UNLESS:-}" ] && timeout -k 5 120 sh -c "$GPUFAB_UNLESS" >/dev/null 2>&1 </dev/null; then
  echo "skip=unless"; exit 0
fi
if [ "${1:-}" = --check ]; then echo "skip=no"; exit 0; fi

rm -f "$here/exit" "$here/pid" "$here/log"
echo $$ > "$here/pid"
(umask 077; : > "$here/log")
timeout -k 10 "$GPUFAB_TIMEOUT" "$here/script" >> "$here/log" 2>&1 </dev/null
echo $? > "$here/exit.new" && mv -f "$here/exit.new" "$here/exit"
echo "ran"
