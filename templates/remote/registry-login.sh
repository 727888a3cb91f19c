f=$1
reg=$(sed -n 1p "$f"); user=$(sed -n 2p "$f")
# shellcheck disable=SC2069 # its errors to the output read, its chatter away
sed -n 3p "$f" | docker login --username "$user" --password-stdin "$reg" 2>&1 >/dev/null
