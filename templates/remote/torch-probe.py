import json, platform, sys
try:
    import torch, torch.distributed as d
    found = dict(torch=torch.__version__, gloo=d.is_available() and d.is_gloo_available(),
                 nccl=d.is_available() and d.is_nccl_available(),
                 gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                 cuda=torch.version.cuda or '', python=platform.python_version())
    try:
        v = torch.cuda.nccl.version()
        found['nccl_version'] = '.'.join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
except Exception as exc:
    found = dict(error='%s: %s' % (type(exc).__name__, exc), python=platform.python_version())
print('GPUFAB-PYTHON ' + json.dumps(found))
sys.exit(0 if 'torch' in found else 3)
