"""Private matching kernels: ``numba_cpu`` (numpy / CPU tensors) and ``torch_ops`` (any torch
device, meant for CUDA). Both implement ``refine_batch`` with the same arguments and return
bit-identical results; :mod:`samrefine.match` validates inputs and picks one."""
