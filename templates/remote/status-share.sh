# `gpufab status`: this node's side of the share, reading only. $1: the path (the head's export, a
# worker's mount point); $2: the unit that serves it (the head's; may be empty). Every look is bounded:
# a stale FUSE or NFS mount hangs whatever touches it. Lines: `dir=yes|no`, `fstype=TYPE` (empty: not
# mounted there), `live=yes|no` (the path answers within 5 s), `unit=STATE` (with $2).
path=$1 unit=$2
if timeout -k 2 5 test -d "$path"; then echo dir=yes; else echo dir=no; fi
echo "fstype=$(timeout -k 2 5 findmnt -rn -o FSTYPE --mountpoint "$path" 2>/dev/null | head -n 1)"
if timeout -k 2 5 ls "$path" >/dev/null 2>&1; then echo live=yes; else echo live=no; fi
if [ -n "$unit" ]; then echo "unit=$(systemctl is-active "$unit" 2>/dev/null)"; fi
true
