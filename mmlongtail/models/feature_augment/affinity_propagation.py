"""Affinity propagation (Frey and Dueck, Science 2007) in torch, for FASA's
grouping of classes by their feature means."""
from typing import Optional, Tuple

import torch
from torch import Tensor


@torch.no_grad()
def affinity_propagation(similarity: Tensor,
                         preference: Optional[float] = None,
                         damping: float = 0.5,
                         max_iter: int = 200,
                         convergence_iter: int = 15,
                         seed: int = 0) -> Tuple[Tensor, bool]:
    """Cluster ``n`` points given their pairwise similarities.

    The message passing of Frey and Dueck (2007) with scikit-learn's defaults
    (damping 0.5, at most 200 iterations, stop after 15 without a change of
    exemplars, preference = median similarity). Ties (e.g. classes never
    seen, whose means are all 0) are broken by noise of ``1e-9`` times the
    median absolute similarity from a generator seeded ``seed``, so the
    result is deterministic and the same on every rank. (scikit-learn's
    noise is relative to each entry, which leaves exact ties between
    identical points, so the messages can oscillate.)

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
        tuple: ``(n,)`` int64 cluster index of each point, in ``[0, K)``,
        and whether the messages converged. Without convergence (or
        without any exemplar) the labels are all ``-1``, as in
        scikit-learn (>= 0.23). Damping 0.5 often oscillates on class
        means (it does on well-separated Gaussian blobs in 64 to 1024
        dimensions); 0.9 with up to 1000 iterations converges there.
    """
    if similarity.dim() != 2 or similarity.size(0) != similarity.size(1):
        raise ValueError('similarity must be a square (n, n) matrix, got '
                         f'{tuple(similarity.shape)}')
    if not 0.5 <= damping < 1:
        raise ValueError(f'damping must be in [0.5, 1), got {damping}')
    n = similarity.size(0)
    S = similarity.detach().to(torch.float64).clone()
    if n == 1:
        return torch.zeros(1, dtype=torch.int64, device=S.device), True
    if preference is None:
        preference = float(S.median())
    S.fill_diagonal_(preference)
    g = torch.Generator(device=S.device).manual_seed(seed)
    scale = float(S.abs().median()) or 1.0
    S += 1e-9 * scale * torch.randn(
        n, n, generator=g, device=S.device, dtype=S.dtype)
    R = torch.zeros_like(S)
    A = torch.zeros_like(S)
    rows = torch.arange(n, device=S.device)
    history = []
    converged = False
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
                converged = True
                break
    exemplars = E.nonzero().flatten()
    if not converged or len(exemplars) == 0:
        return torch.full_like(rows, -1), False
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
    return labels, True
