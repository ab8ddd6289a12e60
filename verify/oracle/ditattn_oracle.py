"""Independent NumPy oracle for ditattn, written from the specs
(/work/shared/spec/llsa.md and ropeslr.md), never from ref/.

Everything is float64; tensors are (B, H, N, D) arrays. Each function is a
direct transcription of a spec paragraph (cited), favouring obviousness over
speed: the oracle must be easy to audit, not fast.
"""
import math

import numpy as np


def default_scale(scale, D):
    """scale <= 0 means 1/sqrt(D)."""
    return 1.0 / math.sqrt(D) if scale <= 0 else float(scale)


# ------------------------------------------------------------------ dense
def dense_forward(q, k, v, scale=0.0):
    """out = softmax(scale q k^T) v per (b, h); also lse = ln sum exp (natural log)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = default_scale(scale, q.shape[-1]) * np.einsum("bhid,bhjd->bhij", q, k)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    denom = e.sum(axis=-1, keepdims=True)
    out = np.einsum("bhij,bhjd->bhid", e / denom, v)
    lse = (m + np.log(denom))[..., 0]
    return out, lse


def lse_merge(out_acc, lse_acc, out_part, lse_part):
    """Combine two partial softmax results; lse = -inf is an empty partial."""
    out_acc, lse_acc, out_part, lse_part = (
        np.asarray(a, np.float64) for a in (out_acc, lse_acc, out_part, lse_part))
    lse = np.logaddexp(lse_acc, lse_part)
    with np.errstate(invalid="ignore"):
        wa = np.where(np.isneginf(lse_acc), 0.0, np.exp(lse_acc - lse))
        wp = np.where(np.isneginf(lse_part), 0.0, np.exp(lse_part - lse))
    return wa[..., None] * out_acc + wp[..., None] * out_part, lse


# ------------------------------------------------------------------ pooling (llsa.md §1)
def pool_mean(x, block):
    """y[c] = exact mean over tokens [c*block, min((c+1)*block, N))."""
    x = np.asarray(x, np.float64)
    N = x.shape[2]
    n = -(-N // block)
    y = np.empty(x.shape[:2] + (n, x.shape[3]))
    for c in range(n):
        y[:, :, c] = x[:, :, c * block:min((c + 1) * block, N)].mean(axis=2)
    return y


def block_counts(N, size):
    n = -(-N // size)
    return np.array([min((c + 1) * size, N) - c * size for c in range(n)], np.float64)


# ------------------------------------------------------------------ token orders (llsa.md §5)
def raster_positions(T, H, W):
    s = np.arange(T * H * W)
    return np.stack([s // (H * W), s // W % H, s % W], axis=1).astype(np.int64)


def morton_code(t, y, x):
    """Bits of (t, y, x) interleaved, t most significant within each triple."""
    code = 0
    for bit in range(21):
        code |= ((int(x) >> bit) & 1) << (3 * bit)
        code |= ((int(y) >> bit) & 1) << (3 * bit + 1)
        code |= ((int(t) >> bit) & 1) << (3 * bit + 2)
    return code


def order_seq_to_raster(kind, grid, tile=(1, 1, 1)):
    """seq_to_raster[s] = raster index of the token at sequence position s.
    kind: 'raster' | 'morton' | 'tile'. Morton for non-power-of-two grids: raster
    indices stably sorted by the code. Tile: tiles in raster order, raster inside
    (edge tiles are partial)."""
    T, H, W = grid
    pos = raster_positions(T, H, W)
    raster = np.arange(T * H * W)
    if kind == "raster":
        return raster
    if kind == "morton":
        keys = [morton_code(*p) for p in pos]
    elif kind == "tile":
        nt = [-(-g // s) for g, s in zip(grid, tile)]
        keys = [((p[0] // tile[0]) * nt[1] + p[1] // tile[1]) * nt[2] + p[2] // tile[2]
                for p in pos]
    else:
        raise ValueError(kind)
    return np.array(sorted(raster, key=lambda r: (keys[r], r)), np.int64)


def order_apply(x, seq_to_raster, inverse=False):
    x = np.asarray(x, np.float64)
    y = np.empty_like(x)
    if inverse:
        y[:, :, seq_to_raster] = x
    else:
        y[:] = x[:, :, seq_to_raster]
    return y


# ------------------------------------------------------------------ 3D RoPE (ropeslr.md §5)
def rope_apply(x, pos, dims, theta, pairing="interleaved", inverse=False):
    """Rotates channel pairs of each axis part by pos_a * theta^(-2j/d_a).
    pos: (N, 3) array of (t, y, x). Channels past sum(dims) are copied."""
    x = np.asarray(x, np.float64)
    pos = np.asarray(pos, np.float64)
    y = x.copy()
    sign = -1.0 if inverse else 1.0
    off = 0
    for a in range(3):
        d_a = int(dims[a])
        for j in range(d_a // 2):
            omega = float(theta) ** (-2.0 * j / d_a)
            phi = sign * pos[:, a] * omega  # (N,)
            if pairing == "interleaved":
                c0, c1 = off + 2 * j, off + 2 * j + 1
            elif pairing == "half_split":
                c0, c1 = off + j, off + j + d_a // 2
            else:
                raise ValueError(pairing)
            cos, sin = np.cos(phi), np.sin(phi)
            u, w = x[..., c0], x[..., c1]
            y[..., c0] = u * cos - w * sin
            y[..., c1] = u * sin + w * cos
        off += d_a
    return y


# ------------------------------------------------------------------ LLSA (llsa.md §1-3)
def top_k(indices, scores, K):
    """min(K, len) entries with the largest score, score descending, ties by
    smaller block index first."""
    ranked = sorted(zip(indices, scores), key=lambda e: (-e[1], e[0]))
    return [int(i) for i, _ in ranked[:K]]


def llsa_select(q, k, b, topk):
    """Selection for one (batch, head): q, k (N, D). Returns (sel, cand) where
    sel[l] (l = 1..L) is a list over level-l query blocks of selected block lists
    and cand[l] (l = 1..L-1) the candidate lists (spec §2)."""
    N = q.shape[0]
    L = len(topk)
    pq = {l: pool_mean(q[None, None], b**l)[0, 0] for l in range(1, L + 1)}
    pk = {l: pool_mean(k[None, None], b**l)[0, 0] for l in range(1, L + 1)}
    n = {l: -(-N // b**l) for l in range(1, L + 1)}
    sel, cand = {}, {}
    sel[L] = [top_k(range(n[L]), [pq[L][G] @ pk[L][C] for C in range(n[L])], topk[L - 1])
              for G in range(n[L])]
    for l in range(L - 1, 0, -1):
        cand[l], sel[l] = [], []
        for g in range(n[l]):
            c_list = [p * b + t for p in sel[l + 1][g // b] for t in range(b) if p * b + t < n[l]]
            cand[l].append(c_list)
            sel[l].append(top_k(c_list, [pq[l][g] @ pk[l][c] for c in c_list], topk[l - 1]))
    return sel, cand


def llsa_forward(q, k, v, b, topk, scale=0.0):
    """LLSA forward (spec §3). q, k, v: (B, H, N, D). Returns out (B,H,N,D),
    lse (B,H,N) and sel: list over levels of int arrays (B, H, n_l, K_l) padded
    with -1 (the API's selection layout)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, Hh, N, D = q.shape
    L = len(topk)
    sc = default_scale(scale, D)
    out = np.empty_like(q)
    lse = np.empty((B, Hh, N))
    sel_out = [np.full((B, Hh, -(-N // b**l), topk[l - 1]), -1, np.int64)
               for l in range(1, L + 1)]
    for bi in range(B):
        for h in range(Hh):
            qq, kk, vv = q[bi, h], k[bi, h], v[bi, h]
            sel, cand = llsa_select(qq, kk, b, topk)
            for l in range(1, L + 1):
                for g, s in enumerate(sel[l]):
                    sel_out[l - 1][bi, h, g, :len(s)] = s
            pk = {l: pool_mean(kk[None, None], b**l)[0, 0] for l in range(1, L + 1)}
            pv = {l: pool_mean(vv[None, None], b**l)[0, 0] for l in range(1, L + 1)}
            cnt = {l: block_counts(N, b**l) for l in range(1, L + 1)}
            for i in range(N):
                keys, vals, logw = [], [], []
                for c in sel[1][i // b]:  # 1. fine tokens
                    js = range(c * b, min((c + 1) * b, N))
                    keys += [kk[j] for j in js]
                    vals += [vv[j] for j in js]
                    logw += [0.0] * len(js)
                for l in range(1, L):  # 2. candidates of the sparse levels
                    for c in cand[l][i // b**l]:
                        keys.append(pk[l][c])
                        vals.append(pv[l][c])
                        logw.append(math.log(cnt[l][c]))
                for C in range(len(cnt[L])):  # 3. every coarsest pooled token
                    keys.append(pk[L][C])
                    vals.append(pv[L][C])
                    logw.append(math.log(cnt[L][C]))
                z = sc * (np.array(keys) @ qq[i]) + np.array(logw)
                m = z.max()
                e = np.exp(z - m)
                lse[bi, h, i] = m + math.log(e.sum())
                out[bi, h, i] = (e / e.sum()) @ np.array(vals)
    return out, lse, sel_out


# ------------------------------------------------------------------ RoPeSLR (ropeslr.md §1-4)
def ropeslr_topk(N, block, policy, rho=0.1, topk=1, sqrt_c=1.0):
    """Kept key blocks per query block; every policy is clamped to [1, n]."""
    n = -(-N // block)
    if policy == "keep_fraction":
        K = max(1, math.ceil(rho * n))
    elif policy == "fixed_k":
        K = topk
    elif policy == "sqrt":
        K = max(1, math.ceil(sqrt_c * math.sqrt(n)))
    else:
        raise ValueError(policy)
    return min(K, n)


def feature_map(u, feature):
    if feature == "elu1":
        return np.where(u > 0, u + 1.0, np.exp(np.minimum(u, 0.0)))
    if feature == "softmax":
        e = np.exp(u - u.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(feature)


def ropeslr_select(q, k, block, K, force_own_block):
    """sel[G] per query block (spec §2): top-K of pooled scores, and the own
    block replaces the lowest-ranked one when absent and forced."""
    pq = pool_mean(q[None, None], block)[0, 0]
    pk = pool_mean(k[None, None], block)[0, 0]
    n = pq.shape[0]
    sel = []
    for G in range(n):
        s = top_k(range(n), [pq[G] @ pk[C] for C in range(n)], K)
        if force_own_block and G not in s:
            s[-1] = G
        sel.append(s)
    return sel


def ropeslr_forward(q, k, v, pos, weights, block, K, rank, feature="elu1", scale=0.0,
                    force_own_block=True):
    """o = o_sparse + W^T o_lowrank. weights: dict of A, Bk (H, D, r), Et (H, T, r),
    Ey (H, Hgrid, r), Ex (H, W, r), W (H, D, D). Low-rank branch by the direct
    O(N^2 r) double sum (spec §7). Returns out, lse_sparse, sel (B, H, n, K)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    w = {name: np.asarray(a, np.float64) for name, a in weights.items()}
    pos = np.asarray(pos, np.int64)
    B, Hh, N, D = q.shape
    sc = default_scale(scale, D)
    n = -(-N // block)
    out = np.empty_like(q)
    lse = np.empty((B, Hh, N))
    sel_out = np.full((B, Hh, n, K), -1, np.int64)
    for bi in range(B):
        for h in range(Hh):
            qq, kk, vv = q[bi, h], k[bi, h], v[bi, h]
            sel = ropeslr_select(qq, kk, block, K, force_own_block)
            pe = w["Et"][h][pos[:, 0]] + w["Ey"][h][pos[:, 1]] + w["Ex"][h][pos[:, 2]]  # (N, r)
            f = feature_map(qq @ w["A"][h] + pe, feature)
            g = feature_map(kk @ w["Bk"][h] + pe, feature)
            for G in range(n):
                sel_out[bi, h, G, :len(sel[G])] = sel[G]
                in_sparse = np.zeros(N, bool)
                for C in sel[G]:
                    in_sparse[C * block:min((C + 1) * block, N)] = True
                for i in range(G * block, min((G + 1) * block, N)):
                    z = sc * (kk[in_sparse] @ qq[i])
                    m = z.max()
                    e = np.exp(z - m)
                    lse[bi, h, i] = m + math.log(e.sum())
                    o_s = (e / e.sum()) @ vv[in_sparse]
                    bg = ~in_sparse
                    if bg.any():
                        a = g[bg] @ f[i]  # f_i . g_j for every background j
                        o_lr = (a @ vv[bg]) / a.sum()
                    else:
                        o_lr = np.zeros(D)
                    out[bi, h, i] = o_s + w["W"][h].T @ o_lr
    return out, lse, sel_out
