for r in "$@"; do
  id=$(docker image inspect --format '{{.Id}}' "$r" 2>/dev/null)
  echo "$r ${id:-none}"
done
