# shellcheck source=/dev/null # the node's own
. /etc/os-release; echo "ID=$ID"; echo "VERSION_CODENAME=$VERSION_CODENAME"
echo "ARCH=$(dpkg --print-architecture)"
echo "DOCKERD=$(find_dockerd || true)"
echo "VERSION=$(dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' docker-ce docker.io 2>/dev/null | awk '$1 == "installed" {print $2 " " $3; exit}')"
echo "GROUPS=$(id -nG)"
