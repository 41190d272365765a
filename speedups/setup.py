# The C extension; everything else is in pyproject.toml.
from setuptools import Extension, setup

setup(ext_modules=[Extension("edge_gw_speedups._lineproto", ["edge_gw_speedups/_lineproto.c"],
                             extra_compile_args=["-std=c11"])])
