ib_ports "$ib_sysfs" "$ib_gids"
