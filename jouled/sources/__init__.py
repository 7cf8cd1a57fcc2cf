"""Power sources: one module each (nvml, rapl, visa, smi, estimate), one small protocol (base.py)."""
