"""A vectorised k-nearest-neighbours classifier that agrees with scikit-learn's brute force.

Distances are computed block by block (``chunk_size`` queries at a time) with PyTorch in
float64:

* euclidean: the GEMM form ``|x|^2 - 2 x.y + |y|^2`` (clamped at 0), compared as squared
  distances and square-rooted only for the output, as scikit-learn's brute force does;
* manhattan: ``torch.cdist(p=1)`` on the non-binary columns plus, for the columns that hold
  only 0 and 1 (40 of covtype's 54), the exact identity ``|a - b| = a + b - 2ab``, i.e. one
  matrix product. On integer data every distance is exact, so it equals scikit-learn's.

Neighbours of a query are its ``k`` smallest distances (``torch.topk``). Which ``k`` points
are the neighbours is only ambiguous when training points tie at the k-th distance (common on
integer features such as covtype's or digits'). Two tie rules are offered:

* ``ties="sklearn"`` (default) replays scikit-learn's bounded max-heap on those queries only.
  scikit-learn (1.3 to 1.9, ``ArgKmin``/``ArgKminClassMode``) scans the training rows in
  order and pushes a point only if it is strictly closer than the heap's root, so which of the
  tied points survive depends on the heap's layout. When the queries are few compared with
  the training rows (``parallel_on_Y``, e.g. 2000 queries on 2 threads), each thread keeps a
  heap for a contiguous block of training chunks (256 rows) and the heaps are merged in thread
  order: the result then depends on the number of OpenMP threads, which is read from
  scikit-learn (pass ``n_threads`` to replay another machine).
* ``ties="index"``: the tied points with the smallest training indices win (a stable sort on
  (distance, index)); simple, and the same on every machine.

The vote follows ``KNeighborsClassifier``: uniform weights count neighbours; ``"distance"``
weights are ``1/d``, except that a query with a neighbour at distance 0 gives weight 1 to its
zero-distance neighbours and 0 to the others. ``predict`` takes the class of the largest vote
and, on equal votes, the smallest class (``argmax`` picks the first maximum).
"""
from __future__ import annotations

import math

import numpy as np
import torch

METRICS = ("euclidean", "manhattan")
WEIGHTS = ("uniform", "distance")
TIES = ("sklearn", "index")
SKLEARN_CHUNK = 256  # scikit-learn's default pairwise_dist_chunk_size


class KNNClassifier:
    """k-nearest-neighbours classification with chunked distance matrices.

    Args:
        n_neighbors: k.
        weights: ``"uniform"`` or ``"distance"``.
        metric: ``"euclidean"`` or ``"manhattan"``.
        chunk_size: queries per distance block (memory: ``chunk_size x n_train`` float64).
        ties: ``"sklearn"`` or ``"index"`` (see the module docstring).
        n_threads: OpenMP threads scikit-learn would use (for ``ties="sklearn"``); default
            scikit-learn's own count on this machine.
    """

    def __init__(self, n_neighbors: int = 5, weights: str = "uniform", metric: str = "euclidean",
                 chunk_size: int = 512, ties: str = "sklearn", n_threads: int | None = None):
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.chunk_size = chunk_size
        self.ties = ties
        self.n_threads = n_threads

    def fit(self, X, y) -> "KNNClassifier":
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be 2-D with one row per label, got X {X.shape} and y {y.shape}")
        if self.n_neighbors > len(X):
            raise ValueError(f"n_neighbors={self.n_neighbors} but only {len(X)} training rows")
        self.classes_, self._y = np.unique(y, return_inverse=True)
        self._X = torch.from_numpy(X)
        self._binary = ((X == 0) | (X == 1)).all(axis=0)
        if self.metric == "euclidean":
            self._train_augmented = _augment(self._X, (self._X * self._X).sum(1), train=True)
        return self

    # -- distances -----------------------------------------------------------------------
    def _reduced_distances(self, queries: torch.Tensor, binary: torch.Tensor,
                           train_bits: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
        """Distances (squared for euclidean) from each query to every training row.

        Both metrics end in one matrix product of augmented matrices, so no full-size
        temporary is made: ``[q, 1, |q|^2] @ [-2t, |t|^2, 1]^T = |q - t|^2`` for euclidean,
        and ``[q, 1, sum q] @ [-2t, sum t, 1]^T = sum |q - t|`` over the 0/1 columns for
        manhattan, added onto ``cdist(p=1)`` of the other columns (``binary`` marks the
        columns that are 0/1 in both sets; ``train_bits`` is their augmented training part).
        Euclidean blocks are written into ``out``, reused from block to block: a fresh
        block-sized tensor each time costs more in page faults than the product itself.
        """
        train = self._X
        if self.metric == "euclidean":
            dist = torch.mm(_augment(queries, (queries * queries).sum(1)), self._train_augmented.T,
                            out=out[:len(queries)])
            return dist.clamp_(min=0.0)
        other = ~binary
        if other.all():
            return torch.cdist(queries, train, p=1)
        if other.any():
            dist = torch.cdist(queries[:, other].contiguous(), train[:, other].contiguous(), p=1)
        else:
            dist = torch.zeros(len(queries), len(train), dtype=torch.float64)
        query_bits = queries[:, binary]
        return dist.addmm_(_augment(query_bits, query_bits.sum(1)), train_bits.T)

    def _strategy(self, n_queries: int) -> str:
        """scikit-learn's choice of parallelisation for these queries (see module docstring)."""
        if self.weights == "uniform" and self.metric == "manhattan":
            return "parallel_on_X"  # ArgKminClassMode forces it
        n_train = len(self._X)
        if n_train < n_queries or 4 * SKLEARN_CHUNK * self._threads() < n_queries:
            return "parallel_on_X"
        return "parallel_on_Y"

    def _threads(self) -> int:
        if self.n_threads is None:
            from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

            self.n_threads = _openmp_effective_n_threads()
        return self.n_threads

    def kneighbors(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of the k nearest training rows, sorted by (distance, index).

        The set of neighbours is scikit-learn's (see ``ties``); within equal distances the
        order here is by index, where scikit-learn's sort leaves it unspecified. Votes do not
        depend on that order: tied neighbours carry equal weights.
        """
        self._check_fitted()
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._X.shape[1]:
            raise ValueError(f"expected queries with {self._X.shape[1]} features, got shape {X.shape}")
        queries_all = torch.from_numpy(X)
        binary = torch.from_numpy(self._binary & ((X == 0) | (X == 1)).all(axis=0))
        train_bits = None
        if self.metric == "manhattan" and binary.any():
            bits = self._X[:, binary]
            train_bits = _augment(bits, bits.sum(1), train=True)
        strategy = self._strategy(len(X))
        k, n_train = self.n_neighbors, len(self._X)
        block = torch.empty(min(self.chunk_size, len(X)), n_train, dtype=torch.float64)
        out_dist = np.empty((len(X), k))
        out_ind = np.empty((len(X), k), dtype=np.intp)
        for start in range(0, len(X), self.chunk_size):
            dist = self._reduced_distances(queries_all[start:start + self.chunk_size], binary, train_bits, block)
            m = min(k + 1, n_train)
            values, index = torch.topk(dist, m, dim=1, largest=False, sorted=True)
            values, index = values.numpy(), index.numpy()
            tied = values[:, k - 1] == values[:, k] if m > k else np.zeros(len(values), bool)
            values, index = values[:, :k].copy(), index[:, :k].copy()
            if tied.any():
                rows = dist.numpy()
                for r in np.flatnonzero(tied):
                    chosen = self._resolve_tie(rows[r], values[r, k - 1], strategy)
                    index[r] = chosen
                    values[r] = rows[r][chosen]
            order = _sort_rows(values, index)
            out_dist[start:start + len(values)] = np.take_along_axis(values, order, 1)
            out_ind[start:start + len(values)] = np.take_along_axis(index, order, 1)
        if self.metric == "euclidean":
            np.sqrt(out_dist, out=out_dist)
        return out_dist, out_ind

    def _resolve_tie(self, row: np.ndarray, kth: float, strategy: str) -> np.ndarray:
        """The k neighbours of one query whose k-th distance ``kth`` is shared by more points."""
        k = self.n_neighbors
        if self.ties == "index":
            closer = np.flatnonzero(row < kth)
            equal = np.flatnonzero(row == kth)[: k - len(closer)]
            return np.concatenate([closer, equal])
        if strategy == "parallel_on_X":
            return replay_heap(row, 0, len(row), k)[1]
        return replay_heap_parallel_on_y(row, k, self._threads())

    # -- votes ---------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Share of the (weighted) vote of each class, columns in ``classes_`` order."""
        dist, ind = self.kneighbors(X)
        labels = self._y[ind]
        if self.weights == "uniform":
            weights = np.ones_like(dist)
        else:
            with np.errstate(divide="ignore"):
                weights = 1.0 / dist
            exact = np.isinf(weights)
            has_exact = exact.any(axis=1)
            weights[has_exact] = exact[has_exact]
        rows = np.arange(len(dist))
        proba = np.zeros((len(dist), len(self.classes_)))
        for i in range(self.n_neighbors):  # neighbour by neighbour, nearest first
            proba[rows, labels[:, i]] += weights[:, i]
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X) -> np.ndarray:
        """The class with the largest vote; on equal votes the smallest class."""
        self._check_fitted()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())

    def _check_fitted(self) -> None:
        if not hasattr(self, "_X"):
            raise RuntimeError("KNNClassifier is not fitted: call fit(X, y) first")


def _augment(rows: torch.Tensor, sums: torch.Tensor, train: bool = False) -> torch.Tensor:
    """``[rows, 1, sums]`` for queries, ``[-2 rows, sums, 1]`` for training rows (see
    ``_reduced_distances``); scaling by -2 is exact in floating point."""
    ones = torch.ones(len(rows), 1, dtype=rows.dtype)
    if train:
        return torch.cat([-2.0 * rows, sums[:, None], ones], dim=1)
    return torch.cat([rows, ones, sums[:, None]], dim=1)


def _sort_rows(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per-row order sorting by distance, then by training index."""
    order = np.argsort(index, axis=1, kind="stable")
    by_value = np.argsort(np.take_along_axis(values, order, 1), axis=1, kind="stable")
    return np.take_along_axis(order, by_value, 1)


def heap_push(values: np.ndarray, indices: np.ndarray, value: float, index: int) -> None:
    """Push onto a fixed-size max-heap, the rule of scikit-learn's ``utils/_heap.pyx``.

    A value is taken only if strictly smaller than the root; it replaces the root and sinks
    down, swapping with the larger child (the left one when both children are equal) while
    that child is strictly larger.
    """
    if value >= values[0]:
        return
    size = len(values)
    pos = 0
    while True:
        left = 2 * pos + 1
        right = left + 1
        if left >= size:
            break
        if right >= size or values[left] >= values[right]:
            child = left
        else:
            child = right
        if not value < values[child]:
            break
        values[pos] = values[child]
        indices[pos] = indices[child]
        pos = child
    values[pos] = value
    indices[pos] = index


def replay_heap(row: np.ndarray, start: int, end: int, k: int,
                heap: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``row[start:end]`` in order into a k-heap, as one scikit-learn thread does.

    Only points below the root at the start of each 256-row block can enter the heap during
    that block (the root never grows), so the Python loop runs over those few points only.
    """
    values, indices = heap if heap is not None else (np.full(k, np.inf), np.full(k, -1, dtype=np.intp))
    for block in range(start, end, SKLEARN_CHUNK):
        stop = min(block + SKLEARN_CHUNK, end)
        for j in np.flatnonzero(row[block:stop] < values[0]):
            heap_push(values, indices, row[block + j], block + j)
    return values, indices


def replay_heap_parallel_on_y(row: np.ndarray, k: int, n_threads: int) -> np.ndarray:
    """scikit-learn's ``parallel_on_Y``: one heap per thread over a contiguous block of
    256-row chunks (OpenMP static schedule: the first ``n_chunks % threads`` threads get one
    chunk more), then the threads' heaps pushed, in thread order and heap-array order, into
    the final heap."""
    n = len(row)
    chunk = min(n, SKLEARN_CHUNK)
    n_chunks = math.ceil(n / chunk)
    threads = min(n_chunks, n_threads)
    per_thread, extra = divmod(n_chunks, threads)
    final = (np.full(k, np.inf), np.full(k, -1, dtype=np.intp))
    first_chunk = 0
    for t in range(threads):
        count = per_thread + (1 if t < extra else 0)
        start, end = first_chunk * chunk, min((first_chunk + count) * chunk, n)
        first_chunk += count
        values, indices = replay_heap(row, start, end, k)
        for value, index in zip(values, indices):
            heap_push(final[0], final[1], value, index)
    return final[1]
