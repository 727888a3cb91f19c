if command -v nft >/dev/null 2>&1; then
  nft list ruleset 2>/dev/null | awk '/^table /{t=$3} /^[ \t]*chain /{c=$2; hook=0} /hook input/{hook=1} t != "gpufab_ray" && hook && /(drop|reject)/ {sub(/^[ \t]+/, ""); print "nft " c ": " $0}'
elif command -v iptables-save >/dev/null 2>&1; then
  iptables-save 2>/dev/null | grep -E '^(-A INPUT .*-j (DROP|REJECT)|:INPUT (DROP|REJECT))' | sed 's/^/iptables /'
fi
true
