echo "user=$(id -un)"
echo "group=$(id -gn)"
echo "home=$(getent passwd "$(id -un)" | cut -d: -f6)"
[ -n "$3" ] || echo "gpus=$(gpu_count "$smi_timeout")"  # $3 `known`: the run has the count already
for f in /etc/ssh/ssh_host_*_key.pub; do [ -r "$f" ] && echo "hostkey=$(cut -d' ' -f1,2 "$f")"; done
[ -r "$HOME/.ssh/$1.pub" ] && echo "meshkey=$(cut -d' ' -f1,2 "$HOME/.ssh/$1.pub")"
{ [ -e "$HOME/.ssh/$2" ] || [ -e "$HOME/.ssh/$2.pub" ]; } && echo "oldkey=yes"
true
