P=$1; B=$2; M=$3; shift 3
for f in "$@"; do
  # shellcheck disable=SC2012,SC2015 # ls: the names as they are; A && B || continue: both hold or next
  case $f in
    unit:*) u=${f#unit:}; systemctl is-active --quiet "$u" 2>/dev/null && echo "active $u" ;;
    own:*) d=${f#own:}; { [ -e "$d" ] || [ -L "$d" ]; } && echo "own $d" ;;
    parent:*) d=${f#parent:}; [ -d "$d" ] && [ ! -L "$d" ] && echo "parent $d $(ls -A "$d" | tr '\n' ' ')" ;;
    *) [ -f "$f" ] && [ ! -L "$f" ] || continue
       # gpufab's only: a path of its own, or a file with its marker (a shared name such as /etc/nccl.conf).
       case $f in *gpufab*) ;; *) grep -q "$M" "$f" || continue ;; esac
       echo "file $f"
       if [ -f "$P$f" ] && [ ! -L "$P$f" ]; then echo "before $f"
       elif [ -e "$P$f.gpufab-absent" ]; then echo "absent $f"
       elif [ -f "$B$f" ] && [ ! -L "$B$f" ] && ! grep -q "$M" "$B$f"; then echo "before-backup $f"
       fi ;;
  esac
done
command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && echo systemd
command -v exportfs >/dev/null 2>&1 && echo exportfs
true
