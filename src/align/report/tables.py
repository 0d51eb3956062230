"""Per-domain accuracy tables of one or more runs (pure functions of run summaries)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..protocols import PROTOCOLS


def domain_rows(summary: dict, protocol: dict, method: str = "training_domain_validation") -> list[dict]:
    """One row per domain: its role, in-domain accuracy (validation split) and test accuracy.

    For a training domain the in-domain accuracy is its held-out validation split; for a test
    domain of a protocol that tests out of distribution (lodo, single_source), the
    out-of-domain accuracy is its test split.
    """
    sel = summary[method]
    acc = sel["acc"]
    rows = []
    val_split = protocol["val_keys"][0].rsplit("_", 1)[1]
    test_split = protocol["test_keys"][0].rsplit("_", 1)[1] if protocol["test_keys"] else None
    in_dist = PROTOCOLS.get(protocol["name"]).test_role == "in_domain"
    domains = list(dict.fromkeys(protocol["train_domains"] + protocol["test_domains"]))
    for d in domains:
        train = d in protocol["train_domains"]
        row = {"domain": d, "role": "train" if train else "test"}
        row["in_domain"] = acc.get(f"{d}_{test_split}") if in_dist else (acc.get(f"{d}_{val_split}") if train else None)
        row["out_of_domain"] = None if (train or in_dist) else acc.get(f"{d}_{test_split}")
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def comparison_table(runs: dict[str, tuple[dict, dict]], title: str,
                     method: str = "training_domain_validation",
                     extra_key: str | None = None) -> Table:
    """A rich table: rows = domains, columns = (in-domain, out-of-domain) per run name.

    Args:
        runs: name -> (summary, protocol).
        extra_key: an `eval` score to show per run (e.g. "masker_iou"), averaged over splits.
    """
    table = Table(title=title)
    table.add_column("domain")
    table.add_column("role")
    for name in runs:
        table.add_column(f"{escape(name)} in-dom %", justify="right")
        table.add_column(f"{escape(name)} OOD %", justify="right")
    first = next(iter(runs.values()))
    domain_list = domain_rows(*first, method=method)
    per_run = {n: {r["domain"]: r for r in domain_rows(s, p, method)} for n, (s, p) in runs.items()}
    for base in domain_list:
        cells = [escape(base["domain"]), base["role"]]  # a domain is text, not markup
        for name in runs:
            r = per_run[name][base["domain"]]
            cells += [_pct(r["in_domain"]), _pct(r["out_of_domain"])]
        table.add_row(*cells)
    # "step": the selected checkpoint the numbers come from; "warm-up": where each algorithm's
    # warm-up ends (ALIGN: guidance starts); selection never picks a warm-up checkpoint
    # (training.selection.summarize). Short labels keep the table within 80 columns.
    table.add_row("step", "", *[c for s, _ in runs.values()
                                          for c in (str(s[method]["step"]), "")])
    starts = [s.get("objective_start", 0) for s, _ in runs.values()]
    if any(starts):
        table.add_row("warm-up", "", *[c for v in starts for c in (str(v) if v else "-", "")])
    return table


def masker_iou_table(runs: dict[str, tuple[dict, dict]], method: str = "training_domain_validation"
                     ) -> Table | None:
    """Mean IoU of each run's masker with the ground-truth masks, per domain (None if no run has
    a masker). Training domains are scored on their validation split, test domains on their test
    split, as the accuracies are."""
    cols = {n: s[method].get("eval", {}).get("masker_iou") for n, (s, _) in runs.items()}
    cols = {n: v for n, v in cols.items() if v}
    if not cols:
        return None
    table = Table(title="masker IoU vs ground truth")
    table.add_column("domain")
    for name in cols:
        table.add_column(f"{escape(name)} IoU", justify="right")
    summary, protocol = runs[next(iter(cols))]
    for row in domain_rows(summary, protocol, method):
        d = row["domain"]
        split = protocol["val_keys"][0].rsplit("_", 1)[1] if row["role"] == "train" else \
            protocol["test_keys"][0].rsplit("_", 1)[1]
        table.add_row(escape(d), *[f"{cols[n].get(f'{d}_{split}', float('nan')):.3f}" for n in cols])
    return table
