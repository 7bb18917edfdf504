#!/usr/bin/env python3
"""Principal directions of a GGUF file's token_embd rows, in float64 with numpy, for the
embedding-subspace tests: the rows dequantized by gguf-py, the covariance
(X - mean)^T (X - mean) / V, numpy.linalg.eigh. Prints JSON: "variances" (every
eigenvalue, descending) and "directions" (the top RANK eigenvectors, each a list of dim
values, in the same order; signs as numpy returns them).

    python3 scripts/reference/embedding_pca.py FILE.gguf RANK
"""
import json
import sys

import gguf
import numpy as np


def main():
    path, rank = sys.argv[1], int(sys.argv[2])
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    rows = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
    centred = rows - rows.mean(axis=0)
    covariance = centred.T @ centred / rows.shape[0]
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    print(json.dumps({"variances": values[order].tolist(),
                      "directions": [vectors[:, j].tolist() for j in order[:rank]]}))


if __name__ == "__main__":
    main()
