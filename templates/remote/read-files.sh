digest=0
for p in "$@"; do
  if [ "$p" = -d ]; then digest=1; continue; fi
  if [ -L "$p" ]; then
    echo "==gpufab-link $p"
  elif [ -f "$p" ] && [ $digest = 1 ]; then
    echo "==gpufab-digest $(stat -c '%a %U %G' "$p") $p"
    dd if="$p" iflag=nofollow,nonblock status=none | sha256sum | cut -d' ' -f1
  elif [ -f "$p" ]; then
    echo "==gpufab-file $(stat -c '%a %U %G' "$p") $p"
    dd if="$p" iflag=nofollow,nonblock status=none | base64 -w0; echo
  else
    echo "==gpufab-missing $p"
  fi
  digest=0
done
