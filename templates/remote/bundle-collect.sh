# As root: the evidence a provider's support asks for about this node, as one base64'd tar.gz after
# `==gpufab-bundle`. $1 the SSH user (the Ray token in their home is redacted, like root's), then the
# units whose journals since $since are read (names or globs such as gpufab-*).
# Each collector gets at most $per seconds (less when the node's $budget is spent: then `skipped`) and
# keeps at most $cap bytes; commands.tsv says, per file: name, exit status, bytes, the command.
# Every value of $secrets_file and each Ray token is replaced by *** in every file before the tar is
# made, and so is what follows TOKEN=, PASSWORD=, SECRET=, API_KEY=: the secrets file itself, the
# tokens and the environment of processes are never read into a file.
umask 077
w=$(mktemp -d /tmp/.gpufab-bundle-XXXXXX) || exit 1
trap 'rm -rf "$w"' EXIT
mkdir "$w/out"
end=$(( $(date +%s) + budget ))
home=$(getent passwd "$1" 2>/dev/null | cut -d: -f6)
shift
units=$(for u in "$@"; do printf "'%s' " "$u"; done)
journal=$(for u in "$@"; do printf -- "-u '%s' " "$u"; done)
{
  sed -n "s/^[A-Za-z_][A-Za-z0-9_]*=//p" "$secrets_file" 2>/dev/null | sed "s/^'\(.*\)'\$/\1/"
  for h in "$home" /root; do
    [ -n "$h" ] && [ -r "$h/$token_path" ] && { head -c 4096 "$h/$token_path"; echo; }
  done
} | awk 'length($0) >= 4' > "$w/secret"

# collect FILE COMMAND: COMMAND's stdout and stderr in FILE, bounded in time and size, noted in commands.tsv.
collect() {
  left=$(( end - $(date +%s) ))
  if [ "$left" -le 0 ]; then
    printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$w/out/commands.tsv"; return
  fi
  t=$per; [ "$left" -lt "$t" ] && t=$left
  { timeout -k 2 "$t" sh -c "$2" 2>&1 </dev/null; echo $? > "$w/rc"; } | head -c "$cap" > "$w/out/$1"
  printf '%s\t%s\t%s\t%s\n' "$1" "$(cat "$w/rc" 2>/dev/null || echo '?')" "$(wc -c < "$w/out/$1")" "$2" >> "$w/out/commands.tsv"
}

collect nvidia-smi-q.txt 'nvidia-smi -q'
collect nvidia-smi-topo.txt 'nvidia-smi topo -m'
collect nvidia-smi-nvlink.txt 'nvidia-smi nvlink -s'
collect lspci-nvidia.txt 'lspci -nn -d 10de:'
collect fabricmanager.txt 'systemctl status nvidia-fabricmanager --no-pager -l -n 50'
collect ibstat.txt 'ibstat'
collect ibv_devinfo.txt 'ibv_devinfo -v'
collect ib-sysfs.txt "grep -H . $ib_sysfs/*/ports/*/state $ib_sysfs/*/ports/*/phys_state $ib_sysfs/*/ports/*/rate $ib_sysfs/*/ports/*/link_layer"
collect kernel-errors.txt "{ dmesg -T 2>/dev/null || dmesg || journalctl -k -b --no-pager -q; } | grep -E -C $context 'NVRM|Xid|SXid|fallen off the bus|nvidia-peermem|mlx5|ib_core|ib_uverbs|infiniband|AER' | tail -n $kernel_lines"
collect version-kernel.txt 'uname -a'
collect os-release.txt 'cat /etc/os-release'
collect version-driver.txt 'cat /proc/driver/nvidia/version 2>/dev/null || nvidia-smi --query-gpu=driver_version,name --format=csv,noheader'
collect version-docker.txt 'docker version'
collect version-ray.txt "$venv/bin/ray --version"
collect netenv.env "cat $netenv_file"
collect units.txt "systemctl list-units --all --no-pager $units"
collect journal-units.txt "journalctl --no-pager -o short-iso --since '$since' $journal"

# Every collected file, the secret values and the secret-looking assignments blanked (literal match: awk's index).
for f in "$w"/out/*; do
  awk -v list="$w/secret" 'BEGIN { while ((getline s < list) > 0) v[++n] = s }
    { for (i = 1; i <= n; i++) { out = ""; while ((p = index($0, v[i])) > 0) { out = out substr($0, 1, p - 1) "***"; $0 = substr($0, p + length(v[i])) } $0 = out $0 } print }' "$f" |
    sed -E 's/((TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|ACCESS_KEY)[A-Za-z0-9_]*[=:][[:space:]]*)[^[:space:]]+/\1***/gI' > "$f.r" && mv "$f.r" "$f"
done
rm -f "$w/secret"
echo "==gpufab-bundle"
tar -C "$w/out" -czf - . | base64
