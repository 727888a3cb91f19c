probe=$1; shift
for py in "$@"; do
  case "$py" in /*) path=$py ;; *) path=$(command -v "$py" 2>/dev/null) || path= ;; esac
  if [ -z "$path" ] || [ ! -x "$path" ]; then echo "absent=$py"; continue; fi
  echo "python=$path"
  out=$(timeout 60 "$path" -c "$probe" 2>&1); rc=$?
  printf '%s\n' "$out" | grep '^GPUFAB-PYTHON ' | head -n 1
  [ "$rc" = 0 ] && exit 0
done
true
