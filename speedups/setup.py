# The C extension; everything else is in pyproject.toml.
from setuptools import Extension, setup

setup(ext_modules=[Extension("edge_gw_speedups._speedups", ["edge_gw_speedups/_speedups.c"],
                             extra_compile_args=["-std=c11"])])
