import socket, sys, time
end = time.time() + 15
while time.time() < end:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), 2) as s:
            if s.recv(4) == b"SSH-":
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
