"""gpufab's all-reduce check, run on every node at once by `inv allreduce`.

Shipped by gpufab to ~/.cache/gpufab/ on each node and started there with the
training environment's python (one that imports torch). It needs nothing
else: no torchrun (Debian's is broken on Python 3.11), no pip install.

Each node gets, from gpufab's launch path, /etc/gpufab/netenv.env loaded
(NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME ...) and NODE_RANK, NNODES,
MASTER_ADDR, MASTER_PORT. It starts --nproc processes (one per GPU with NCCL,
one with Gloo), which:
  1. join the process group (env:// rendezvous on MASTER_ADDR:MASTER_PORT);
  2. per size: fill a tensor with rank+1, all-reduce (SUM) once and check
     that every element is 1+2+...+world; warm up; time --iters all-reduces;
  3. with --link: measure raw TCP throughput from every other node to the
     head over the same network, one stream for a few seconds (iperf3 when
     every node has it, else a plain socket sender/receiver).
Every finding is one line on stdout: "GPUFAB-ALLREDUCE {json}".
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time

MARK = "GPUFAB-ALLREDUCE "
LINK_SECONDS = 2.0
CHUNK = 1 << 20
#: NCCL_DEBUG=INFO lines worth sending back: which transport each channel took, which HCAs, why not IB.
NCCL_WORDS = (" via ", "NET/", "Using network", "NVLS", "GPU Direct RDMA", "NCCL version", "NCCL_IB_", "NCCL_NET",
              "libibverbs")
NCCL_LINES = 300


def nccl_lines(text):
    """The lines of an NCCL debug log that say what it used (deduplicated, at most NCCL_LINES)."""
    out, seen = [], set()
    for line in text.splitlines():
        if any(word in line for word in NCCL_WORDS) and line not in seen:
            seen.add(line)
            out.append(line.strip()[:300])
    return out[:NCCL_LINES]


def emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=("gloo", "nccl"), required=True)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--rank-base", type=int, default=0)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--node-bases", required=True, help="first global rank of every node, in node order")
    p.add_argument("--sizes", required=True, help="bytes, comma-separated")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--link", action="store_true")
    return p.parse_args()


def main():
    args = parse_args()
    if args.nproc == 1:
        return worker(0, args)
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used after fork
    procs = [ctx.Process(target=worker_exit, args=(i, args)) for i in range(args.nproc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(abs(p.exitcode or 0) for p in procs)


def worker_exit(local_rank, args):
    sys.exit(worker(local_rank, args))


def worker(local_rank, args):
    rank = args.rank_base + local_rank
    log = None
    if args.backend == "nccl":
        # NCCL says which transport it took only in its debug log: one file per process, read back below.
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), "gpufab-nccl-%d-%d.log" % (os.getpid(), rank))
        os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", NCCL_DEBUG_FILE=log)
    try:
        return run_worker(local_rank, rank, args)
    finally:
        if log and os.path.exists(log):
            if local_rank == 0:
                with open(log, errors="replace") as fh:
                    emit("nccl", rank=rank, lines=nccl_lines(fh.read()))
            os.unlink(log)


def run_worker(local_rank, rank, args):
    try:
        import torch
        import torch.distributed as dist

        nccl = args.backend == "nccl"
        device = "cpu"
        if nccl:
            torch.cuda.set_device(local_rank)
            device = "cuda:%d" % local_rank
        dist.init_process_group(
            args.backend, init_method="env://", rank=rank, world_size=args.world,
            timeout=datetime.timedelta(seconds=args.timeout),
        )
        ifname_var = "NCCL_SOCKET_IFNAME" if nccl else "GLOO_SOCKET_IFNAME"
        emit("rank", rank=rank, node_rank=int(os.environ["NODE_RANK"]), local_rank=local_rank,
             interface=os.environ.get(ifname_var), interface_var=ifname_var, host=socket.gethostname(),
             device=torch.cuda.get_device_name(local_rank) if nccl else "cpu", torch=torch.__version__)

        def sync():
            if nccl:
                torch.cuda.synchronize()

        expected = args.world * (args.world + 1) / 2
        for size in [int(s) for s in args.sizes.split(",")]:
            count = max(1, size // 4)
            tensor = torch.full((count,), float(rank + 1), dtype=torch.float32, device=device)
            dist.all_reduce(tensor)
            sync()
            right = bool(torch.all(tensor == expected).item())
            if not right:
                emit("wrong", rank=rank, bytes=count * 4, expected=expected, got=float(tensor[0].item()))
            for _ in range(args.warmup):
                dist.all_reduce(tensor)
            sync()
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.iters):
                dist.all_reduce(tensor)
            sync()
            seconds = (time.perf_counter() - start) / args.iters
            # The slowest rank's time, and whether any rank got a wrong sum.
            stats = torch.tensor([seconds, 0.0 if right else 1.0], dtype=torch.float64, device=device)
            dist.all_reduce(stats, op=dist.ReduceOp.MAX)
            if rank == 0:
                emit("size", bytes=count * 4, seconds=float(stats[0].item()), right=stats[1].item() == 0,
                     iters=args.iters)
        if args.link:
            measure_links(args, rank, local_rank, device, torch, dist)
        dist.barrier()
        dist.destroy_process_group()
        if rank == 0:
            emit("done")
        return 0
    except Exception as exc:  # one line the controller shows as the reason
        emit("error", rank=rank, message="%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:400]))
        return 1


def measure_links(args, rank, local_rank, device, torch, dist):
    """Every other node sends to the head in turn; the head's rank 0 reports each rate."""
    master = os.environ["MASTER_ADDR"]
    bases = [int(b) for b in args.node_bases.split(",")]
    have = torch.tensor([1 if shutil.which("iperf3") else 0], device=device)
    dist.all_reduce(have, op=dist.ReduceOp.MIN)
    tool = "iperf3" if have.item() else "builtin"
    for node, sender in enumerate(bases[1:], start=1):
        server = proc = None
        port = torch.tensor([0], device=device)
        if rank == 0:
            server = socket.socket()
            server.bind((master, 0))
            if tool == "iperf3":
                port[0] = server.getsockname()[1]
                server.close()
                proc = subprocess.Popen(["iperf3", "-s", "-1", "-B", master, "-p", str(int(port[0]))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            else:
                server.listen(1)
                server.settimeout(args.timeout)
                port[0] = server.getsockname()[1]
        dist.broadcast(port, src=0)
        rate = torch.tensor([0.0], dtype=torch.float64, device=device)
        error = ""
        if rank == sender:
            try:
                rate[0] = send(master, int(port.item()), tool, args.timeout)
            except Exception as exc:
                error = "%s: %s" % (type(exc).__name__, exc)
        if rank == 0 and tool == "builtin":
            try:
                receive(server, args.timeout)
            finally:
                server.close()
        dist.broadcast(rate, src=sender)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if rank == 0:
            emit("link", node_rank=node, bytes_per_second=float(rate.item()), tool=tool, seconds=LINK_SECONDS)
        if error:
            emit("link_error", node_rank=node, message=error[:300])


def send(host, port, tool, timeout):
    """Bytes per second from here to host:port, one TCP stream."""
    if tool == "iperf3":
        out = subprocess.run(["iperf3", "-c", host, "-p", str(port), "-t", str(int(LINK_SECONDS)), "-J"],
                             capture_output=True, text=True, timeout=timeout)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8
    data = b"\0" * CHUNK
    sent = 0
    with socket.create_connection((host, port), timeout=timeout) as conn:
        start = time.perf_counter()
        while time.perf_counter() - start < LINK_SECONDS:
            conn.sendall(data)
            sent += len(data)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the receiver closes once it has read everything
        return sent / (time.perf_counter() - start)


def receive(server, timeout):
    conn, _ = server.accept()
    conn.settimeout(timeout)
    with conn:
        while conn.recv(CHUNK):
            pass


if __name__ == "__main__":
    sys.exit(main())
