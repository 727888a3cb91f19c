sig=$1 pattern=$2; shift 2
matching=" $(pgrep -f -- "$pattern" | tr '\n' ' ') "
for pid in "$@"; do
  case "$matching" in
    *" $pid "*) kill -s "$sig" "$pid" 2>/dev/null && echo "signalled $pid" || echo "gone $pid" ;;
    *) echo "gone $pid" ;;
  esac
done
# Up to 2 s for them to go, looked at every tenth of a second rather than slept through.
tries=0
while [ "$tries" -lt 20 ]; do
  left=""
  for pid in "$@"; do
    # A zombie has ended: only its parent's wait is left, which may never come from a busy init.
    kill -0 "$pid" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status" && left="$left $pid"
  done
  [ -z "$left" ] && break
  sleep 0.1
  tries=$((tries + 1))
done
for pid in $left; do echo "alive $pid"; done
true
