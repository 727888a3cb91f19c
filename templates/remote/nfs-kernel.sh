cat /proc/filesystems
for m in nfs nfsd; do
  if find "/lib/modules/$(uname -r)" -name "$m.ko*" 2>/dev/null | grep -q .; then echo "module $m"; fi
done
echo "kernel $(uname -r)"
