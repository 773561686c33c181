"""The model card: what a reviewer reads before promoting a model (markdown)."""

from __future__ import annotations

import pandas as pd

from features.asof import cutoff_label


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _comparable(champion: dict, label_definition: str, data_window: dict) -> str:
    """Why the champion's figures cannot be set beside this version's, if they cannot."""
    if champion.get("label_definition") and champion["label_definition"] != label_definition:
        return (f": it predicts {champion['label_definition']}, so its figures measure another outcome and are not "
                "comparable with the ones above")
    if champion.get("test_cutoff") and champion["test_cutoff"] != data_window.get("test_cutoff"):
        return (": another test snapshot, so its figures are not comparable with the ones above (`dynseg models "
                "promote` scores both on the newer one)")
    return ""


def model_card(
    *, name: str, target: str, label_definition: str, data_window: dict, rows: dict, evaluation_table: pd.DataFrame,
    differences: pd.DataFrame, calibration: pd.DataFrame, criteria: list[dict], champion: dict | None,
    model_info: dict, base_rate_note: str, unavailable_groups: list[str], top_features: list[str],
    bands: pd.DataFrame | None = None, calibration_note: str = "", bgnbd=None, forced: bool = False,
) -> str:
    from models.explain import labelled  # (its plotting imports only where a card is written)

    verdict = ("VALIDATED" if all(c["passed"] for c in criteria) else
               "FAILED, registered anyway with --allow-unvalidated (UNVALIDATED_FORCED)" if forced else "REJECTED")
    # the seasonal assumption holds only where a seasonal factor was applied (not when the latest
    # rate was carried forward: base_rate: latest, or no year-earlier rate)
    season = ("- Base-rate correction assumes this year's seasonal pattern resembles last year's.\n"
              if "seasonal factor" in base_rate_note else
              "- The base rate at scoring is the latest realized one carried forward: a seasonal swing between the "
              "test cutoff and a run moves realized rates away from it.\n")
    fitted = ("" if bgnbd is None else
              f" BG/NBD as fitted on the test snapshot (lifetimes' names): r = {bgnbd.r:.4g}, alpha = "
              f"{bgnbd.alpha:.4g} days, a = {bgnbd.a:.4g}, b = {bgnbd.b:.4g}.")
    champ = ("When this version was trained there was no champion yet." if not champion else
             f"The champion when this version was trained: version {champion['version']} — test AUC {champion.get('roc_auc', float('nan')):.4f}, "
             f"Brier {champion.get('brier', float('nan')):.4f} (test snapshot as of {cutoff_label(champion.get('test_cutoff'))})"
             + _comparable(champion, label_definition, data_window) + ".")
    crit = "\n".join(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['text']}" for c in criteria)
    return f"""# Model card — {name}

## What it predicts
{label_definition}.

Scores are **calibrated probabilities** ({model_info['calibration']} calibration fitted on the
validation snapshot), adjusted for base-rate shift: {base_rate_note}.

## Data
- Events from {data_window['first_event']} to {data_window['last_event']} (UTC).
- Snapshots as of (the end of each day, UTC): {', '.join(map(cutoff_label, data_window['cutoffs']))}; out-of-time
  **test** = {cutoff_label(data_window['test_cutoff'])}, **validation** = {cutoff_label(data_window['valid_cutoff'])}, the rest train.
  Features see only events up to each snapshot; the training labels close by the validation snapshot, the validation
  labels by the test snapshot.
- Rows: {', '.join(f"{k} {v:,}" for k, v in rows.items())}.
- Feature groups unavailable in this data: {', '.join(unavailable_groups) or 'none'}.

## Out-of-time test metrics (model vs baselines on the same rows)
{_table(evaluation_table)}

Baselines, each calibrated on the validation snapshot as the model is: **recency** (days since the last
purchase), **rfm** (the sum of recency, frequency and monetary quintiles) and **bgnbd** (the BG/NBD model of
lifetimes and PyMC-Marketing, fitted on the purchase histories of every customer who bought before each
snapshot's cutoff: its chance of a purchase within the horizon; customers who never bought get their rate
on the validation snapshot). A baseline a
snapshot's data cannot fit is not listed.{fitted}

AUC difference, model minus baseline (paired DeLong 95 % CI):
{_table(differences)}

{champ}

## Calibration on the test snapshot (deciles of predicted probability)
{_table(calibration)}

{calibration_note[:1].upper() + calibration_note[1:]}. The slope is b in logit P(outcome) = a + b logit(score),
fitted on the test snapshot. It moves from one snapshot to the next, so a single value away from 1
is a reason to watch realized quality (`dynseg lift`), not proof of a fault.

## Bands (saved with this version: a fixed threshold is used as resolved here; a top share is taken again in each run, its threshold here is the test snapshot's)
{_table(bands) if bands is not None and len(bands) else "No bands."}

## Validation criteria — {verdict}
{crit}

## Model
LightGBM, trees: {model_info['trees']}; {model_info['features']} features.
Not inputs (`exclude_features` in configs/training.yaml): {', '.join(model_info.get('excluded') or []) or 'none'}.
Not inputs, as they equal another input on every training row: {'; '.join(f'{c} (= {k})' for c, k in (model_info.get('repeats') or {}).items()) or 'none'}.
Most important (mean |SHAP| on a sample of the test snapshot, as in plots/shap_bar.png): {', '.join(labelled(f) for f in top_features)}.

## Known limits
- Trained on the behaviour of the snapshot period; a change in marketing pressure, assortment or
  tracking changes what the features mean. Monitor drift and realized quality.
- Probabilities are for the population and horizon above; they are not comparable across targets.
{season}"""
