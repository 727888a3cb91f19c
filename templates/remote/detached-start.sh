name=$1 log=$2 user=$3 cmd=$4
home=$(getent passwd "$user" | cut -d: -f6)
case "$log" in /*) ;; *) log="$home/$log" ;; esac
# shellcheck disable=SC2016 # $1 is the inner shell's
if ! as_user "$user" sh -c 'mkdir -p "$(dirname "$1")" && : >>"$1"' sh "$log"; then
  echo "cannot open $log as $user" >&2; exit 1
fi
job="exec >>\"\$GPUFAB_LOG\" 2>&1 </dev/null; $netenv; $cmd"
start_detached "$name" "$user" "$home" env GPUFAB_LOG="$log" /bin/sh -c "$job" || exit 1
if [ "$started" = systemd ]; then echo "how=systemd unit $name.service"; else echo "how=nohup, pid $!"; fi
echo "log=$log"
