home=$(getent passwd "$2" | cut -d: -f6)
case "$1" in /*) d=$1 ;; *) d="$home/$1" ;; esac
echo "home=$home"
[ -n "$3" ] || echo "gpus=$(gpu_count "$smi_timeout")"  # $3 `known`: the run has the count already
for f in run script env; do
  if [ -f "$d/$f" ]; then echo "$f=$(sha256sum < "$d/$f" | cut -d' ' -f1)"; fi
done
if [ -f "$d/pid" ] && [ ! -f "$d/exit" ]; then
  pid=$(cat "$d/pid")
  if proc_runs "$pid" "$d/run"; then echo "running=yes"; fi
fi
true
