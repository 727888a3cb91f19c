t=$1; shift
for h in "$@"; do
  ( out=$(timeout -k 5 "$t" ssh -n -o BatchMode=yes -o ConnectTimeout=10 "$h" true 2>&1); rc=$?
    echo "$h $rc $(printf '%s\n' "$out" | grep -v '^$' | tail -n 1)" ) &
done
wait
