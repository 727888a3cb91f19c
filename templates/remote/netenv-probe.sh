ports=$1; shift
for ip in "$@"; do
  for port in $ports; do
    # shellcheck disable=SC2016 # $1 and $2 are bash's
    err=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' sh "$ip" "$port" 2>&1); rc=$?
    if [ $rc = 0 ]; then state=open
    elif [ $rc = 124 ]; then state=timeout
    else case "$err" in
      *refused*) state=refused ;;
      *) state=unreachable ;;
    esac; fi
    echo "$ip $port $state"
  done
done
