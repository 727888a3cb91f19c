tag=$1
pattern="^GPUFAB_RUN=$(printf %s "$tag" | sed 's/[.]/[.]/g')"
case $tag in *.) ;; *) pattern="$pattern\$" ;; esac
tagged=$(grep -lzE "$pattern" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
[ -n "$tagged" ] || { echo 0; exit 0; }
pids=$(ps -e -o pid=,ppid=,comm= | awk -v tagged="$tagged" -v me="$$" '
  function walk(p,   k, i, n) { print p; n = split(kids[p], k, " "); for (i = 1; i <= n; i++) walk(k[i]) }
  BEGIN { n = split(tagged, t, "[ \n]+"); for (i = 1; i <= n; i++) if (t[i] != "") tag[t[i]] = 1 }
  { parent[$1] = $2; comm[$1] = $3; kids[$2] = kids[$2] " " $1 }
  END {
    for (p in tag) {
      if (p == me) continue
      if (comm[parent[p]] ~ /^sshd/) walk(p)
      else if (!(parent[p] in tag) && comm[parent[parent[p]]] ~ /^sshd/) root[parent[p]] = 1
    }
    for (p in root) walk(p)
  }')
[ -n "$pids" ] || { echo 0; exit 0; }
# shellcheck disable=SC2086 # one word per PID
kill -TERM $pids 2>/dev/null
i=0
# shellcheck disable=SC2086
while [ $i -lt 20 ] && kill -0 $pids 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
# shellcheck disable=SC2086
kill -KILL $pids 2>/dev/null
# shellcheck disable=SC2086
echo $pids | wc -w
