set -e
umask 022
while [ $# -gt 0 ]; do
  src=$1 dest=$2 mode=$3 owner=$4 group=$5 digest=$6 keep=$7; shift 7
  dir=$(dirname "$dest")
  home=$(getent passwd "$owner" | cut -d: -f6)
  as=""
  if [ "$owner" != root ] && [ -n "$home" ] && [ "${dest#"$home"/}" != "$dest" ]; then
    as="runuser -u $owner --"
    $as mkdir -p -m 0700 "$dir"
  else
    mkdir -p "$dir"
  fi
  dperm=$(stat -c %a "$dir") downer=$(stat -c %U "$dir")
  if [ $(( 0$dperm & 022 )) -ne 0 ] || { [ "$downer" != root ] && [ "$downer" != "$owner" ]; }; then
    echo "refusing to write $dest: $dir ($downer, mode $dperm) can be written by another user" >&2; exit 3
  fi
  [ "$downer" = root ] && as=""
  if [ "$keep" = 1 ]; then
    # shellcheck disable=SC2174 # only the deepest directory is private: the backup directory
    mkdir -p -m 0700 "$backup"
    # The node's own version from before gpufab's first write (or that there was none): what reset puts back.
    if [ ! -e "$backup/.before$dest" ] && [ ! -e "$backup/.before$dest.gpufab-absent" ]; then
      mkdir -p "$backup/.before$dir"
      if [ -f "$dest" ] && [ ! -L "$dest" ]; then cp -pP "$dest" "$backup/.before$dest"
      else : > "$backup/.before$dest.gpufab-absent"; fi
    fi
    if [ -f "$dest" ] && [ ! -L "$dest" ]; then
      mkdir -p "$backup$dir"
      cp -pP "$dest" "$backup$dest"
    fi
  fi
  if [ -n "$src" ]; then
    tmp=$($as mktemp "$dir/.gpufab-new.XXXXXXXX")
    # shellcheck disable=SC2002,SC2016 # $1 is the inner shell's
    cat "$src" | $as sh -c 'cat > "$1"' sh "$tmp"
    rm -f "$src"
    # shellcheck disable=SC2016
    got=$($as sh -c 'sha256sum < "$1"' sh "$tmp" | cut -d' ' -f1)
    if [ "$got" != "$digest" ]; then
      $as rm -f "$tmp"; echo "refusing to install $dest: the uploaded copy changed before it was installed" >&2; exit 3
    fi
    if [ -z "$as" ]; then chown "$owner:$group" "$tmp"; else $as chgrp "$group" "$tmp"; fi
    $as chmod "$mode" "$tmp"
    $as mv -f "$tmp" "$dest"
  elif [ -z "$as" ]; then
    chown -h "$owner:$group" "$dest"
    chmod "$mode" "$dest"
  else
    $as chgrp "$group" "$dest"
    $as chmod "$mode" "$dest"
  fi
done
