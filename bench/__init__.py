"""The batchvoid benchmark: `python -m bench` (see README.md, "Benchmark").

Every figure is measured in one process tree on this machine, over loopback only: the
simulator in its own process, each contender as a child process measured by `wait4`
(wall time, CPU time, peak RSS). Comparisons are ratios of runs interleaved in the same
invocation, the median over rounds; no absolute time is a target.
"""
