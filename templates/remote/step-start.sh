unit=$1 user=$2 home=$3 runner=$4
# shellcheck disable=SC2016 # $1 is the inner shell's
as_user "$user" sh -c 'rm -f "$(dirname "$1")/exit"' sh "$runner"
start_detached "$unit" "$user" "$home" /bin/sh "$runner"
