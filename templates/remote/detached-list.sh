pattern=$1
ancestors=" "
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
  ancestors="$ancestors$p "
  p=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2)
done
pids=$(pgrep -f -- "$pattern"); rc=$?
if [ $rc -gt 1 ]; then  # 1 is "nothing matches"; 2 and 3 are pgrep refusing the pattern or failing
  echo "pgrep failed (exit $rc) on this pattern" >&2; exit 2
fi
for pid in $pids; do
  case "$ancestors" in *" $pid "*) continue ;; esac
  cmd=$(proc_cmdline "$pid")
  [ -n "$cmd" ] && printf '%s %s\n' "$pid" "$cmd"
done
true
