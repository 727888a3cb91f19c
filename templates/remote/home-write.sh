set -e
d="$HOME/$1"
tmp=$(mktemp "$d/.$2.gpufab-XXXXXX")
cat > "$tmp" || { rm -f "$tmp"; exit 1; }
chmod "$3" "$tmp"
mv -f "$tmp" "$d/$2"
