sig=$1 pattern=$2; shift 2
matching=" $(pgrep -f -- "$pattern" | tr '\n' ' ') "
for pid in "$@"; do
  case "$matching" in
    *" $pid "*) kill -s "$sig" "$pid" 2>/dev/null && echo "signalled $pid" || echo "gone $pid" ;;
    *) echo "gone $pid" ;;
  esac
done
sleep 2
for pid in "$@"; do kill -0 "$pid" 2>/dev/null && echo "alive $pid"; done
true
