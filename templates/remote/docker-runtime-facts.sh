find_dockerd >/dev/null && echo docker=yes
command -v nvidia-container-runtime >/dev/null && echo nvidia=yes
true
