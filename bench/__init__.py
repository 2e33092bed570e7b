"""edgenode benchmarks: `python -m bench [NAME ...] [--quick] [--out DIR]`."""
