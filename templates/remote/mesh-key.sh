set -e
k="$HOME/.ssh/$1"
if [ ! -s "$k" ]; then
  umask 077
  mkdir -p "$HOME/.ssh"
  rm -f "$k" "$k.pub"
  ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$k"
  chmod 644 "$k.pub"
  echo "==gpufab-generated"
fi
echo "==gpufab-public $(ssh-keygen -y -f "$k" | cut -d' ' -f1,2)"
