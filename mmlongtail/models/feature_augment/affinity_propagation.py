"""Affinity propagation (Frey and Dueck, Science 2007) in torch, for FASA's
grouping of classes by their feature means."""
from typing import Optional

import torch
from torch import Tensor


@torch.no_grad()
def affinity_propagation(similarity: Tensor,
                         preference: Optional[float] = None,
                         damping: float = 0.5,
                         max_iter: int = 200,
                         convergence_iter: int = 15,
                         seed: int = 0) -> Tensor:
    """Cluster ``n`` points given their pairwise similarities.

    The message passing of Frey and Dueck (2007) with scikit-learn's defaults
    (damping 0.5, at most 200 iterations, stop after 15 without a change of
    exemplars, preference = median similarity); degenerate ties are broken
    by noise of relative size ``1e-12`` from a generator seeded ``seed``, so
    the result is deterministic and the same on every rank.

    Args:
        similarity (Tensor): ``(n, n)``, larger = more similar (e.g. the
            negative squared Euclidean distance).
        preference (float, optional): Self-similarity; more clusters when
            larger. Defaults to the median of ``similarity``.
        damping (float): In ``[0.5, 1)``.
        max_iter (int): Iteration limit.
        convergence_iter (int): Stop when the exemplars have not changed for
            this many iterations.
        seed (int): Seed of the tie-breaking noise.

    Returns:
        Tensor: ``(n,)`` int64 cluster index of each point, in ``[0, K)``.
        If the messages never pick an exemplar every point is its own
        cluster.
    """
    if similarity.dim() != 2 or similarity.size(0) != similarity.size(1):
        raise ValueError('similarity must be a square (n, n) matrix, got '
                         f'{tuple(similarity.shape)}')
    if not 0.5 <= damping < 1:
        raise ValueError(f'damping must be in [0.5, 1), got {damping}')
    n = similarity.size(0)
    S = similarity.detach().to(torch.float64).clone()
    if n == 1:
        return torch.zeros(1, dtype=torch.int64, device=S.device)
    if preference is None:
        preference = float(S.median())
    S.fill_diagonal_(preference)
    g = torch.Generator(device=S.device).manual_seed(seed)
    S += (1e-12 * S.abs() + 1e-300) * torch.randn(
        n, n, generator=g, device=S.device, dtype=S.dtype)
    R = torch.zeros_like(S)
    A = torch.zeros_like(S)
    rows = torch.arange(n, device=S.device)
    history = []
    for _ in range(max_iter):
        AS = A + S
        top2 = AS.topk(2, dim=1)
        first, second = top2.values[:, 0], top2.values[:, 1]
        arg = top2.indices[:, 0]
        R_new = S - first[:, None]
        R_new[rows, arg] = S[rows, arg] - second
        R = damping * R + (1 - damping) * R_new
        Rp = R.clamp(min=0)
        Rp[rows, rows] = R[rows, rows]
        A_new = Rp.sum(0, keepdim=True) - Rp
        diag = A_new[rows, rows].clone()
        A_new = A_new.clamp(max=0)
        A_new[rows, rows] = diag
        A = damping * A + (1 - damping) * A_new
        E = (A[rows, rows] + R[rows, rows]) > 0
        history.append(E)
        if len(history) > convergence_iter:
            history.pop(0)
            if E.any() and all(torch.equal(E, h) for h in history):
                break
    exemplars = E.nonzero().flatten()
    if len(exemplars) == 0:
        return rows.clone()
    labels = S[:, exemplars].argmax(1)
    labels[exemplars] = torch.arange(len(exemplars), device=S.device)
    # refine: each cluster's exemplar is its member most similar to the rest
    for k in range(len(exemplars)):
        members = (labels == k).nonzero().flatten()
        exemplars[k] = members[S[members][:, members].sum(0).argmax()]
    labels = S[:, exemplars].argmax(1)
    labels[exemplars] = torch.arange(len(exemplars), device=S.device)
    # renumber the clusters 0..K-1 in order of first appearance
    _, labels = torch.unique(labels, return_inverse=True)
    return labels
