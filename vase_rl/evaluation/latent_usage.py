"""Which latents each domain uses, labelled as in the VASE paper's traversal figures.

The VASE paper (Achille et al. 2018, figs. 2, 3, 5, 7) colours every latent of every domain
by its history. A latent is *in use* by a domain when it is active in the domain's latent mask
(spec §4) and the domain's decoder depends on it (``used_latents``, spec §5). Walking the
domains in the order they were first seen, latent n of domain d is:

* ``"added"``: in use by d and by no earlier domain (newly allocated capacity);
* ``"reused"``: in use by d and by at least one earlier domain (a shared factor);
* ``"frozen"``: not in use by d but in use by an earlier domain (kept for the past);
* ``"unused"``: in use by no domain so far (spare capacity).

Over the whole run a latent is ``"shared"`` (in use by two or more domains), ``"specific"``
(exactly one) or ``"unused"`` (none). The paper reports, e.g., 8 of 24 latents in use after
three domains: that is :attr:`LatentUsage.num_in_use`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vase_rl.evaluation._arrays import to_numpy

__all__ = ["LatentUsage", "latent_usage_table", "USAGE_LABELS"]

USAGE_LABELS = ("added", "reused", "frozen", "unused")


@dataclass
class LatentUsage:
    """Result of :func:`latent_usage_table`."""

    domains: list[Hashable]
    in_use: np.ndarray  # (num_domains, latent_dim) bool
    labels: dict[Hashable, list[str]]  # domain -> label per latent
    counts: dict[Hashable, dict[str, int]]  # domain -> label -> count
    sharing: list[str]  # per latent: "shared" / "specific" / "unused"
    num_in_use: int = field(default=0)  # latents in use by at least one domain

    def rows(self) -> list[dict[str, Any]]:
        """One dict per latent: ``{"latent": n, <domain>: label, ..., "overall": sharing}``."""
        out = []
        for n in range(self.in_use.shape[1]):
            row: dict[str, Any] = {"latent": n}
            row.update({d: self.labels[d][n] for d in self.domains})
            row["overall"] = self.sharing[n]
            out.append(row)
        return out

    def to_text(self) -> str:
        """A plain-text table (latents as rows, domains as columns) for logs and reports."""
        head = ["latent"] + [f"domain {d}" for d in self.domains] + ["overall"]
        body = [[f"z{r['latent']}"] + [r[d] for d in self.domains] + [r["overall"]] for r in self.rows()]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head] + body]
        lines.append(f"{self.num_in_use} of {self.in_use.shape[1]} latents in use")
        return "\n".join(lines)


def _stack(x: Any, name: str) -> tuple[list[Hashable], np.ndarray]:
    if isinstance(x, Mapping):
        domains = list(x.keys())
        rows = [to_numpy(v, f"{name}[{d!r}]").reshape(-1) for d, v in x.items()]
        if not rows:
            raise ValueError(f"{name} is empty")
        if len({r.size for r in rows}) != 1:
            raise ValueError(f"{name}: every domain needs the same number of latents")
        arr = np.stack(rows)
    else:
        arr = to_numpy(x, name)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"{name} must be a mapping domain -> mask or a (num_domains, latent_dim) array")
        domains = list(range(arr.shape[0]))
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be binary (0/1 or bool)")
    return domains, arr.astype(bool)


def latent_usage_table(masks_by_domain: Any, used_by_domain: Any = None) -> LatentUsage:
    """Label every (domain, latent) pair as added / reused / frozen / unused.

    Args:
        masks_by_domain: each domain's latent mask (``latent_mask``), as a mapping
            domain -> (latent_dim,) binary vector in the order the domains were first seen, or
            a ``(num_domains, latent_dim)`` array whose row i is domain i.
        used_by_domain: the matching ``used_latents`` per domain (same layout and domains), or
            ``None`` to take every active latent as used.
    """
    domains, mask = _stack(masks_by_domain, "masks_by_domain")
    if used_by_domain is None:
        used = np.ones_like(mask)
    else:
        used_domains, used = _stack(used_by_domain, "used_by_domain")
        if isinstance(used_by_domain, Mapping) and isinstance(masks_by_domain, Mapping):
            if set(used_domains) != set(domains):
                raise ValueError(f"masks and used latents cover different domains: {domains} vs {used_domains}")
            order = {d: i for i, d in enumerate(used_domains)}
            used = used[[order[d] for d in domains]]
        if used.shape != mask.shape:
            raise ValueError(f"masks_by_domain has shape {mask.shape} but used_by_domain has {used.shape}")
    in_use = mask & used
    labels: dict[Hashable, list[str]] = {}
    counts: dict[Hashable, dict[str, int]] = {}
    earlier = np.zeros(in_use.shape[1], dtype=bool)
    for i, d in enumerate(domains):
        now = in_use[i]
        lab = np.where(now, np.where(earlier, "reused", "added"), np.where(earlier, "frozen", "unused"))
        labels[d] = [str(x) for x in lab]
        counts[d] = {name: int((lab == name).sum()) for name in USAGE_LABELS}
        earlier |= now
    per_latent = in_use.sum(axis=0)
    sharing = ["shared" if c >= 2 else ("specific" if c == 1 else "unused") for c in per_latent]
    return LatentUsage(domains, in_use, labels, counts, sharing, int((per_latent > 0).sum()))
