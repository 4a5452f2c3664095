"""Build the shipped offline zero-shot task `romer_pycloze` from the stdlib corpus's test split.

Each item: a few lines of Python as context and the start of the next line; the choices are the
true end of that line and three ends of other lines. Deterministic (seed 0).

    python scripts/make_pycloze.py romer/evaluation/tasks/romer_pycloze.jsonl
"""

import json
import random
import sys

from romer.data import load_corpus

ITEMS = 200


def main(path: str) -> None:
    rng = random.Random(0)
    lines = load_corpus("stdlib", "test").text.splitlines()
    candidates = [i for i in range(3, len(lines)) if 30 <= len(lines[i].strip()) <= 80 and " " in lines[i].strip()
                  and not lines[i].strip().startswith("#")]
    chosen = sorted(rng.sample(candidates, ITEMS))
    with open(path, "w") as handle:
        for i in chosen:
            line = lines[i]
            cut = line.index(" ", len(line) - len(line.lstrip()) + 8) if " " in line[len(line) - len(line.lstrip()) + 8:] else len(line) // 2
            head, tail = line[:cut], line[cut:]
            others = []
            while len(others) < 3:
                other = lines[rng.choice(candidates)]
                space = other.find(" ", len(other) // 2)
                end = other[space:] if space > 0 else other[len(other) // 2:]
                if end != tail and end not in others:
                    others.append(end)
            choices = others + [tail]
            rng.shuffle(choices)
            context = "\n".join(lines[i - 3:i]) + "\n" + head
            handle.write(json.dumps({"context": context, "choices": choices, "label": choices.index(tail)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
