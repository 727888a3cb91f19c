"""The training python of a GPU-shaped lab host: the real (CPU) torch, with CUDA's answers of the profile.

torch.cuda says what the host's GPU profile has (its GPUs, its CUDA version, NCCL available), so the
doctor and the fleet see a GPU node; nothing runs on a GPU: the lab's all-reduce runs Gloo.
"""
import builtins
import json
import os

_PROFILE = "/usr/local/lib/gpufab-lab/gpu/cuda.json"
_real_import = builtins.__import__
_done = []


def _patch(torch):
    with open(_PROFILE) as fh:
        cuda = json.load(fh)
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: int(cuda["gpus"])
    torch.cuda.get_device_name = lambda i=0: cuda["name"]
    torch.version.cuda = cuda["cuda"]
    torch.distributed.is_nccl_available = lambda: True
    torch.cuda.nccl.version = lambda: tuple(cuda["nccl"])


def _import(name, *args, **kwargs):
    module = _real_import(name, *args, **kwargs)
    # Once, after `import torch` has finished (torch's own imports of itself come first, half done).
    if name == "torch" and not _done and hasattr(module, "distributed") and hasattr(module, "version") \
            and os.path.exists(_PROFILE):
        _done.append(True)
        try:
            _real_import("torch.cuda.nccl")
            _patch(module)
        except Exception:  # a torch without these: left as it is
            pass
    return module


builtins.__import__ = _import
