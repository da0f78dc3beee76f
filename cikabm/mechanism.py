"""How a treated arm differs from the reference arm, patient by patient: cures, delays, and where.

Every virtual patient sits in every arm with the same lesions and draws
(common random numbers), so each patient's two courses can be compared
directly. For a treated arm against the reference arm (adjuvant setting):

* **cured**: the patient recurs in the reference arm within follow-up, and
  not in the treated arm within the same follow-up (a recurrence delayed past
  the end of follow-up, or past an other-cause death, counts here: the
  trial cannot tell it from a cure);
* **new**: recurs in the treated arm only (chance: the arms' random streams
  part once treatment differs);
* **delayed**: recurs in both; the delay is the treated arm's recurrence time
  minus the reference arm's;
* each split by the source of the reference arm's recurrence
  (micrometastasis or de novo) and by its timing (early: before
  :data:`EARLY_MONTHS`, the usual 2-year cut-off; late: after);
* deaths, cancer deaths and curative retreatments per arm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Early recurrence: within 2 years of resection (the usual cut-off, e.g. Yan 2023, Portolani 2006).
EARLY_MONTHS = 24.0
#: Columns the breakdown adds to a comparison table.
MECHANISM_COLUMNS = ("recurred_ref", "recurred_arm", "cured", "new", "both_recur", "median_delay_months",
                     "cured_micrometastasis", "cured_de_novo", "early_ref", "early_arm", "late_ref", "late_arm",
                     "deaths_ref", "deaths_arm", "cancer_deaths_ref", "cancer_deaths_arm")


def _paired(patients: pd.DataFrame, arm: str, reference: str) -> pd.DataFrame:
    cols = ["patient_id", "rfs_months", "rfs_event", "recurrence_months", "recurrence_source", "os_event",
            "cause_of_death"]
    ref = patients.loc[patients["arm"] == reference, cols].set_index("patient_id")
    trt = patients.loc[patients["arm"] == arm, cols].set_index("patient_id")
    return ref.join(trt, lsuffix="_ref", rsuffix="_arm", how="inner")


def mechanism_breakdown(patients: pd.DataFrame, arm: str, reference: str) -> dict[str, Any]:
    """Cures, delays, recurrence sources and timing, and deaths of ``arm`` against ``reference``.

    Parameters
    ----------
    patients : pandas.DataFrame
        An adjuvant trial's patient table (``recurrence_months`` NaN when no
        recurrence within follow-up).
    arm, reference : str
        The treated and the reference arm.

    Returns
    -------
    dict
        JSON-ready counts (keys :data:`MECHANISM_COLUMNS`; ``median_delay_months``
        None when no patient recurs in both arms) and ``by_source``: the same
        cures, both-recur counts and median delays per source of the reference
        arm's recurrence.
    """
    p = _paired(patients, arm, reference)
    rec_ref, rec_arm = p["recurrence_months_ref"].notna(), p["recurrence_months_arm"].notna()
    both = rec_ref & rec_arm
    delay = (p.loc[both, "recurrence_months_arm"] - p.loc[both, "recurrence_months_ref"])

    def median(x: pd.Series) -> float | None:
        return float(np.median(x)) if len(x) else None

    out: dict[str, Any] = {
        "patients": len(p),
        "recurred_ref": int(rec_ref.sum()), "recurred_arm": int(rec_arm.sum()),
        "cured": int((rec_ref & ~rec_arm).sum()), "new": int((~rec_ref & rec_arm).sum()),
        "both_recur": int(both.sum()), "median_delay_months": median(delay),
        "early_ref": int((p["recurrence_months_ref"] < EARLY_MONTHS).sum()),
        "early_arm": int((p["recurrence_months_arm"] < EARLY_MONTHS).sum()),
        "late_ref": int((p["recurrence_months_ref"] >= EARLY_MONTHS).sum()),
        "late_arm": int((p["recurrence_months_arm"] >= EARLY_MONTHS).sum()),
        "deaths_ref": int(p["os_event_ref"].sum()), "deaths_arm": int(p["os_event_arm"].sum()),
        "cancer_deaths_ref": int((p["cause_of_death_ref"] == "cancer").sum()),
        "cancer_deaths_arm": int((p["cause_of_death_arm"] == "cancer").sum()),
    }
    by_source = {}
    for source in ("micrometastasis", "de_novo"):
        mine = p["recurrence_source_ref"] == source
        by_source[source] = {"recurred_ref": int((mine & rec_ref).sum()),
                             "cured": int((mine & rec_ref & ~rec_arm).sum()),
                             "both_recur": int((mine & both).sum()),
                             "median_delay_months": median(delay[mine[both]])}
        out[f"cured_{source}"] = by_source[source]["cured"]
    out["by_source"] = by_source
    return out


def add_mechanism_columns(table: pd.DataFrame, patients: pd.DataFrame, reference: str) -> pd.DataFrame:
    """A comparison table (one row per arm, column ``arm``) with the breakdown's columns and the OS
    hazard ratio (NaN for the reference arm; unchanged outside the adjuvant setting)."""
    if "recurrence_source" not in patients.columns:
        return table
    from cikabm.survival import endpoint_summary

    os_comparisons = endpoint_summary(patients, "os", reference_arm=reference)["comparisons"]
    extra = []
    for arm in table["arm"]:
        row: dict[str, Any] = {c: np.nan for c in MECHANISM_COLUMNS}
        row["os_hr"] = np.nan
        if arm != reference:
            b = mechanism_breakdown(patients, arm, reference)
            row.update({c: np.nan if b[c] is None else b[c] for c in MECHANISM_COLUMNS})
            hr = os_comparisons.get(f"{arm}_vs_{reference}", {}).get("hr")
            row["os_hr"] = np.nan if hr is None else hr
        extra.append(row)
    note = table.pop("note")
    out = pd.concat([table.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    out["note"] = note.to_numpy()
    return out
