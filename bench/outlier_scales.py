"""How much the arrays' scale falls when each scale segment's largest weights are held in digital units.

    python bench/outlier_scales.py [--model romer-tiny] [--noise cim-80c,gaussian] [--fractions 0.0005,0.001,0.0025,0.005]

Every device and periphery error of a chip that is a share of g_max is, in weight units, proportional to the scale of
its segment (the largest |w| of a tile, or of a column within a tile with column scaling). The mean squared scale over
every on-chip weight, after `split_outliers` over before, is the factor by which those errors' variance falls.
"""

from __future__ import annotations

import argparse

from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_, parse_noise_spec
from romer.noise.mapping import ConductanceMapping
from romer.noise.outliers import split_outliers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="romer-tiny")
    parser.add_argument("--noise", default="cim-80c,gaussian")
    parser.add_argument("--fractions", default="0.0005,0.001,0.0025,0.005")
    args = parser.parse_args()
    model, _ = load_model(args.model)
    fractions = [float(f) for f in args.fractions.split(",")]
    print("| chip | scaling | " + " | ".join(f"{100 * f:g} % moved" for f in fractions) + " |")
    print("|---|---|" + "---|" * len(fractions))
    for spec in args.noise.split(","):
        config = parse_noise_spec(spec)
        mapping = ConductanceMapping(config.tile_rows, config.tile_cols, config.g_max_us, config.scaling == "column")
        with apply_noise_(model, NoiseConfig.preset("ideal", roles=config.roles), seed=0) as chip:
            matrices = [m for name in chip.names() for m in
                        ((chip.clean_value(name).float(),) if len(chip.shape(name)) == 2 else chip.clean_value(name).float())]
        ratios = []
        for fraction in fractions:
            after = before = 0.0
            for weight in matrices:
                analog, _ = split_outliers(weight, fraction, mapping)
                before += float(mapping.expand(mapping.scales(weight), weight.shape[-1]).pow(2).sum())
                after += float(mapping.expand(mapping.scales(analog), weight.shape[-1]).pow(2).sum())
            ratios.append(after / before)
        print(f"| `{spec}` | {config.scaling} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
