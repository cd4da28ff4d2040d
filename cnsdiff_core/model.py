"""LightGCN (He et al. 2020) with the details METHOD.md fixes: no self loops, layer mean, BPR."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def normalized_adjacency(train: np.ndarray, n_users: int, n_items: int,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Sparse (U+I, U+I) D^-1/2 A D^-1/2 of the user-item bipartite graph (zero degree -> 0)."""
    u = torch.as_tensor(train[:, 0], dtype=torch.long)
    i = torch.as_tensor(train[:, 1], dtype=torch.long) + n_users
    rows = torch.cat([u, i])
    cols = torch.cat([i, u])
    n = n_users + n_items
    deg = torch.bincount(rows, minlength=n).float()
    dinv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    vals = dinv[rows] * dinv[cols]
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
    return adj.to_sparse_csr().to(device)


class _SymmetricSpMM(torch.autograd.Function):
    """adj @ x for a symmetric sparse adj: the backward is adj @ grad, so no transpose of the
    sparse matrix is ever built (torch.sparse.mm's backward builds one per call: 4x slower on CPU)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adj, grad)


class LightGCN(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.user_emb = nn.Parameter(torch.empty(n_users, dim))
        self.item_emb = nn.Parameter(torch.empty(n_items, dim))
        nn.init.xavier_uniform_(self.user_emb)
        nn.init.xavier_uniform_(self.item_emb)
        self.register_buffer("adj", torch.empty(0), persistent=False)

    def set_graph(self, adj: torch.Tensor) -> None:
        self.adj = adj

    def propagate(self, keep_layers: bool = False):
        """Final embeddings = mean of layers 0..L. Returns (users (U,d), items (I,d)) and, with
        keep_layers, also the per-layer stack (L+1, U+I, d) that MixGCF needs."""
        x = torch.cat([self.user_emb, self.item_emb], dim=0)  # (U+I, d)
        stack = [x]
        for _ in range(self.layers):
            x = _SymmetricSpMM.apply(self.adj, x)  # (U+I, d); the normalized adjacency is symmetric
            stack.append(x)
        if keep_layers:
            layers = torch.stack(stack, dim=0)  # (L+1, U+I, d)
            final = layers.mean(0)
        else:  # the same mean without materializing the (L+1, U+I, d) stack (a third of RNS's epoch on CPU)
            final = stack[0] / (self.layers + 1)
            for layer in stack[1:]:
                final = final.add(layer, alpha=1 / (self.layers + 1))
        # split, not two slices: a slice's backward writes its gradient into a zero tensor of the full
        # (U+I, d) size and the two are added (two fills, two copies and an add per batch); split's is
        # one concatenation, with the same values
        users, items = final.split([self.n_users, self.n_items])
        if keep_layers:
            return users, items, layers
        return users, items

    def l2_reg(self, users: torch.Tensor, *item_batches: torch.Tensor) -> torch.Tensor:
        """Squared L2 of the layer-0 rows in the batch, / 2 / batch size (LightGCN convention)."""
        reg = self.user_emb[users].pow(2).sum()
        for items in item_batches:
            reg = reg + self.item_emb[items].pow(2).sum()
        return reg / 2 / max(len(users), 1)


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """mean softplus(s_uj - s_ui) = -mean log sigmoid(s_ui - s_uj)."""
    return F.softplus(neg_scores - pos_scores).mean()
