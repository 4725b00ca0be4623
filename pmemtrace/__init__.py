"""pmemtrace: per-VMA huge-page, DAX and VM_SYNC observability.

Data flows one way through the package:

  kernel facts (kernel.py, btf.py, headers.py)
  /proc and page-table readers (procfs.py, pagemap.py)
        -> per-VMA model (vmas.py)
  probes/*.c + their loader (loader.py, the only module that imports bcc)
        -> aggregation (aggregate.py, pure: counts in, per-VMA/per-process rows out)
        -> views (views/*.py: rich tables, plain lines, JSON)
        -> command line (cli.py)
"""

__version__ = "0.1.0"
