[ -n "$1" ] || echo "GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')"  # $1 `known`: the run has the count already
echo "PCI=$(lspci -nn -d 10de: 2>/dev/null | grep -cE '\[03(00|02)\]')"
echo "TOOLKIT=$(dpkg-query -W -f='${db:Status-Status} ${Version}' nvidia-container-toolkit 2>/dev/null)"
echo "CTK=$(command -v nvidia-ctk)"
echo "RUNTIME=$(command -v nvidia-container-runtime)"
