"""The task modules' help texts, from the steps' declarations: `gpufab --list` and `--help` load no step.

Below the marker line the module is generated (`scripts/generate`, from ops/chain.py's CHAIN and
every module's declared settings; core/helptext.py renders it and tests/unit/test_derived.py
fails when it differs). So a new step is in --skip's names, and an option states the default
its setting declares, with no edit here.
"""


def option(setting, words=None):
    """An option's help: its own words (else the setting's), the setting's default and where else it is given.

    A name not below (yet) says so instead of failing the import: scripts/generate imports the
    task tree to read the declarations (tests/unit/test_derived.py holds every help to a known name).
    """
    if setting not in SETTINGS:
        return f"{words or setting} ({setting}: {UNKNOWN})"
    doc, default, place = SETTINGS[setting]
    shown = "" if default in ("", "none") else f"default: {default}; " if " " in default else f"default {default}; "
    return f"{words or doc} ({shown}{place} {setting})"


#: What an option's help says of a setting that is not below: scripts/generate has not run since it was declared.
UNKNOWN = "not among the declarations: run scripts/generate"


def skip_help():
    return f"steps to leave out, comma-separated ({', '.join(OPTIONAL)}, or one of the inventory's steps:)"


def only_help():
    return f"run only these steps ({', '.join(s for s in CHAIN if s not in OPTIONAL)} always runs)"


def bootstrap_doc():
    return f"The whole setup: {', '.join(CHAIN[:-1])}, your steps, {CHAIN[-1]}; then the report."


# ---- generated from the declarations by scripts/generate (tests/unit/test_derived.py): do not edit below
#: The bootstrap chain's steps, in chain order (your own steps join it before the last).
CHAIN = ('preflight', 'fetch', 'wheels', 'limits', 'docker', 'images', 'containers', 'netenv', 'mesh', 'storage', 'ray', 'tools', 'allreduce', 'verify')
#: The steps --skip and --only take, in chain order; the others always run.
OPTIONAL = ('fetch', 'wheels', 'limits', 'docker', 'images', 'containers', 'netenv', 'mesh', 'storage', 'ray', 'tools', 'allreduce', 'verify')
#: Every declared setting: (what it does, its default as docs/settings.md shows it, where it is given).
SETTINGS = {
    'allow_public_networks': ('let listeners bind addresses outside the private ranges (warned every run)', 'false', 'var'),
    'allreduce_backend': ('auto (nccl on GPU nodes, else gloo), nccl or gloo', 'auto', 'var'),
    'allreduce_expected_gbps': ("the busbw the cluster should reach (the judgement's reference)", 'from the GPUs and fabric', 'var'),
    'allreduce_iters': ('timed iterations per size', '10', 'var'),
    'allreduce_port': ('its rendezvous port', 'master_port + 17', 'var'),
    'allreduce_sizes': ('message sizes', '1M,16M,64M', 'var'),
    'allreduce_timeout': ('seconds the whole job may take', '60', 'var'),
    'bootstrap_skip': ('steps this cluster always does without (`[nfs, tools]`)', 'none', 'var'),
    'command_timeout': ('seconds one remote command may run, where its step sets no bound of its own', "the step's", 'config'),
    'connect_timeout': ('seconds an SSH connection may take to open', '10', 'config'),
    'cpus': ('CPUs per task of a Slurm job', "Slurm's", 'var'),
    'dead_after': ('seconds of SSH silence after which a host counts as gone', '30', 'config'),
    'docker_source': ('where Docker comes from: official (download.docker.com) or distro', 'official', 'var'),
    'fetch_port': ("the head's download server for the other nodes (private address only)", '8741', 'var'),
    'gpu_test_image': ('an image on the node that docker.verify runs with --gpus all', 'none', 'var'),
    'gpus': ("this node's GPU count for NPROC_PER_NODE, Ray and Slurm", 'counted on the node', 'node var'),
    'hosts': ('the hosts of a run without an inventory (what `-H` sets), the first one the head', 'none', 'config'),
    'inventory': ('the inventory file (GPUFAB_INVENTORY wins)', 'inventory/hosts.yaml', 'config'),
    'known_hosts': ('the known_hosts file that pins every host key', '~/.ssh/known_hosts', 'config'),
    'master_port': ('MASTER_PORT of torch.distributed jobs (the all-reduce uses it + 17)', '29500', 'var'),
    'memlock': ('locked memory per process in KiB, or unlimited (RDMA registers its buffers)', 'unlimited', 'var'),
    'mesh': ("SSH between the nodes (a hostfile, each node's key); false leaves the mesh step out", 'true', 'var'),
    'netenv_profile': ('which NCCL settings: auto, ethernet or infiniband', 'auto', 'var'),
    'nfs_export': ("the head's shared directory", '/mnt/shared', 'var'),
    'nfs_mount': ('where every node mounts it', 'nfs_export', 'var'),
    'nic': ("this node's cluster NIC, where `ip route get <head>` would pick another", 'found per node', 'node var'),
    'nofile': ('open files per process (soft and hard), for logins and systemd units', '65536', 'var'),
    'nvidia_container_key_fingerprint': ("the key's pinned OpenPGP fingerprint", 'C95B321B61E88C1809C4F759DDCAE044F796ECB0', 'var'),
    'nvidia_container_key_url': ("where each GPU node fetches that repository's signing key", 'https://nvidia.github.io/libnvidia-container/gpgkey', 'var'),
    'nvidia_container_repo': ("the NVIDIA Container Toolkit's apt repository", "NVIDIA's stable deb repository", 'var'),
    'packages': ('Debian packages for every node (`[tmux, nvtop]`); the tools step runs only with some', 'none', 'var'),
    'pip_find_links': ("a directory or URL of wheels for Ray's venv", 'none', 'var'),
    'pip_index_url': ('the package index (secret-safe: never on a command line)', 'PyPI', 'var'),
    'pip_proxy': ('an HTTP proxy for the package index', 'none', 'var'),
    'private_ranges': ("more address ranges that count as the cluster's private network", 'RFC 1918, 100.64/10, fc00::/7', 'var'),
    'private_subnet': ('the subnet the share is exported to', "the head's private network", 'var'),
    'ray_auth': ("Ray's token authentication (RAY_AUTH_MODE=token)", 'true, where the version has it', 'var'),
    'ray_dashboard_host': ('the private address the dashboard listens on', "the head's private address", 'var'),
    'ray_extra_packages': ("more pins into Ray's venv (`[torch==2.5.1]`)", 'none', 'var'),
    'ray_firewall': ("Ray's ports admit the cluster's nodes only", 'true', 'var'),
    'ray_port': ("the head's GCS port", '6379', 'var'),
    'ray_venv': ("the venv Ray (and the all-reduce's default python) lives in", '/opt/gpufab/venv', 'var'),
    'ray_version': ('Ray on every node', '2.60.0', 'var'),
    'shared_cache': ('HF_HOME in the share (none: every node keeps its own)', '<mount>/.cache/huggingface', 'var'),
    'shared_downloads': ('the head downloads once for everyone; false: each node for itself', 'true', 'var'),
    'slots': ("this node's slots in the MPI/DeepSpeed hostfile", 'its GPUs, else 1', 'node var'),
    'sshfs_port': ("the head's SFTP-only sshd that serves the share to sshfs", '2222', 'var'),
    'storage': ("the share's backend: auto, nfs or sshfs", 'auto', 'var'),
    'sudo_password_file': ("a file holding the login's sudo password (mode 600), for every node or one", 'none (INVOKE_SUDO_PASSWORD, or a prompt)', 'var'),
    'train_python': ('the training python (a path); per node too', "Ray's venv, else python3", 'var'),
    'uv_version': ('the uv every node runs', '0.13.9', 'var'),
    'workers': ('hosts worked on at once (threads of one run)', '32', 'config'),
}
