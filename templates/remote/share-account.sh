a=$1
if ! id -u "$a" >/dev/null 2>&1; then
  [ "$2" = plan ] && exit 0  # a dry run makes no account
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$a" || exit 1
  echo created
fi
echo "ids $(id -u "$a") $(id -g "$a")"
