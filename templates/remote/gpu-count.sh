gpu_count "$smi_timeout"
