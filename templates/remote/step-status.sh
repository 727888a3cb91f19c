d=$1 n=$2
if [ -f "$d/exit" ]; then echo "exit=$(cat "$d/exit")"
elif [ -f "$d/pid" ] && proc_runs "$(cat "$d/pid")" "$d/run"; then
  echo "running=yes"
else echo "running=no"
fi
echo "==log"
tail -n "$n" "$d/log" 2>/dev/null
true
