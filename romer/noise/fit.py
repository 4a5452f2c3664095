"""Bring your own chip: fit a noise preset from measured conductances.

CSV columns (header required, one row per device read):
- `target_us`: the conductance the device was programmed to, µS;
- `measured_us`: what was read back, µS;
- `temperature_c` (optional): the read temperature, °C. Rows at the reference temperature
  (`--reference-c`, default the lowest in the file) fit the programming noise; rows at other
  temperatures fit the temperature shift.

Programming noise: the std of (measured − target) in bins of target conductance, fitted by a
polynomial of degree ≤ 2 in g/g_max (g_max = the largest target), weighted by bin size.
Temperature: at each temperature T, r = measured/target over devices with target ≥ 10 % of
g_max; with r = r_ref·(1 + κ·ΔT + β·ΔT·ε), κ is the least-squares slope of
mean(r)/mean(r_ref) − 1 against ΔT, and β the slope of sqrt((var(r) − gain²·var(r_ref)) / E[r_ref²]).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from romer.errors import RomerError
from romer.noise.config import NoiseConfig, validated

MIN_ROWS = 20


def read_measurements(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            missing = {"target_us", "measured_us"} - set(fields)
            if missing:
                raise RomerError(f"{path} lacks column '{sorted(missing)[0]}'; the header must name "
                                 "target_us, measured_us and optionally temperature_c")
            columns = {name: [] for name in ("target_us", "measured_us", "temperature_c") if name in fields}
            for line, row in enumerate(reader, start=2):
                for name, values in columns.items():
                    try:
                        values.append(float(row[name]))
                    except (TypeError, ValueError):
                        raise RomerError(f"{path}:{line}: column '{name}' is not a number ({row[name]!r})") from None
    except OSError as error:
        raise RomerError(f"cannot read measurement file {path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error):
        raise RomerError(f"{path} is not a readable CSV file; write a header and comma-separated numbers") from None
    data = {name: np.asarray(values) for name, values in columns.items()}
    if len(data["target_us"]) < MIN_ROWS:
        raise RomerError(f"{path} has {len(data['target_us'])} rows; a fit needs at least {MIN_ROWS}")
    if (data["target_us"] < 0).any():
        raise RomerError(f"{path}: column 'target_us' has negative conductances; give conductances in µS (≥ 0)")
    return data


def fit_programming(target: np.ndarray, measured: np.ndarray, g_max: float, bins: int = 16) -> tuple[float, ...]:
    levels = np.unique(target)
    if len(levels) <= bins:
        groups = [target == level for level in levels]
    else:
        edges = np.quantile(target, np.linspace(0, 1, bins + 1))
        index = np.clip(np.searchsorted(edges, target, side="right") - 1, 0, bins - 1)
        groups = [index == b for b in range(bins)]
    groups = [g for g in groups if g.sum() >= 2]
    centers = np.array([target[g].mean() / g_max for g in groups])
    sigmas = np.array([(measured[g] - target[g]).std(ddof=1) for g in groups])
    weights = np.sqrt([g.sum() for g in groups])
    degree = min(2, len(groups) - 1)
    coeffs = np.polynomial.polynomial.polyfit(centers, sigmas, degree, w=weights)
    return tuple(float(c) for c in coeffs)


def fit_temperature(data: dict[str, np.ndarray], reference_c: float, g_max: float) -> tuple[float, float]:
    temperature, target, measured = data["temperature_c"], data["target_us"], data["measured_us"]
    usable = target >= 0.1 * g_max
    ratio = np.where(usable, measured / np.where(usable, target, 1), np.nan)
    reference = usable & (temperature == reference_c)
    if reference.sum() < 2:
        raise RomerError(f"no devices read at the reference temperature {reference_c} °C; set --reference-c")
    ref_mean, ref_var = np.nanmean(ratio[reference]), np.nanvar(ratio[reference])
    deltas, shifts, spreads = [], [], []
    for t in np.unique(temperature):
        rows = usable & (temperature == t)
        if t == reference_c or rows.sum() < 2:
            continue
        deltas.append(t - reference_c)
        gain = np.nanmean(ratio[rows]) / ref_mean  # 1 + κ·ΔT
        shifts.append(gain - 1)
        # r_T = r_ref·(1 + κΔT + βΔT·ε): var(r_T) = gain²·var(r_ref) + (βΔT)²·E[r_ref²]
        excess = np.nanvar(ratio[rows]) - gain**2 * ref_var
        spreads.append(np.sqrt(max(0.0, excess) / (ref_var + ref_mean**2)))
    if not deltas:
        return 0.0, 0.0
    d = np.asarray(deltas)
    return float(d @ np.asarray(shifts) / (d @ d)), float(abs(d) @ np.asarray(spreads) / (d @ d))


def fit_noise(path: str | Path, reference_c: float | None = None, name: str | None = None) -> NoiseConfig:
    """A NoiseConfig whose programming noise (and temperature response, if measured) fit the file."""
    path = Path(path)
    data = read_measurements(path)
    g_max = float(data["target_us"].max())
    if g_max <= 0:
        raise RomerError(f"{path}: every target_us is 0; program devices to several levels")
    fields: dict = {"name": name or path.stem, "g_max_us": g_max}
    at_reference = np.ones_like(data["target_us"], dtype=bool)
    if "temperature_c" in data:
        reference_c = float(data["temperature_c"].min()) if reference_c is None else reference_c
        at_reference = data["temperature_c"] == reference_c
        shift, spread = fit_temperature(data, reference_c, g_max)
        fields.update(reference_c=reference_c, temperature_c=reference_c,
                      temp_shift_per_c=shift, temp_spread_per_c=spread)
    if at_reference.sum() < MIN_ROWS:
        raise RomerError(f"{path} has {int(at_reference.sum())} rows at the reference temperature; "
                         f"a fit needs at least {MIN_ROWS}")
    fields["prog_coeffs_us"] = fit_programming(data["target_us"][at_reference], data["measured_us"][at_reference], g_max)
    return validated(fields)
