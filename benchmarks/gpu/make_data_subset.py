#!/usr/bin/env python3
"""Writes the first N training and M test images of a gzip IDX dataset (Fashion-MNIST as
Debian installs it) to OUT_DIR in the same four-file format, so that the GPU check can run
the app on real data without the full dataset. Standard library only.

Usage: make_data_subset.py SRC_DIR OUT_DIR [N_TRAIN] [N_TEST]   (defaults 6000 and 1000)
"""
import gzip
import os
import struct
import sys


def subset(src, dst, count):
    with gzip.open(src, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    dims = (magic & 0xFF) - 1  # the dimensions after the item count
    shape = struct.unpack(">" + "I" * dims, data[8:8 + 4 * dims])
    item = 1
    for d in shape:
        item *= d
    count = min(count, n)
    header = struct.pack(">II", magic, count) + data[8:8 + 4 * dims]
    body = data[8 + 4 * dims:8 + 4 * dims + count * item]
    if len(body) != count * item:
        sys.exit(f"{src}: truncated: {count} items of {item} bytes expected")
    with gzip.open(dst, "wb") as f:
        f.write(header + body)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    n_train = int(sys.argv[3]) if len(sys.argv) > 3 else 6000
    n_test = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    os.makedirs(out, exist_ok=True)
    for name, count in (("train-images-idx3-ubyte.gz", n_train),
                        ("train-labels-idx1-ubyte.gz", n_train),
                        ("t10k-images-idx3-ubyte.gz", n_test),
                        ("t10k-labels-idx1-ubyte.gz", n_test)):
        subset(os.path.join(src, name), os.path.join(out, name), count)


if __name__ == "__main__":
    main()
