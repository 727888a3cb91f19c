[ -c /dev/fuse ] && echo fusedev
cat /proc/filesystems
