"""Write environment.yml (conda users) from requirements.lock so the two always pin the same versions."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    pins = [ln.strip() for ln in (ROOT / "requirements.lock").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    lines = ["# Generated from requirements.lock by tools/write_environment.py (make lock); do not edit by hand.",
             "name: lexprobe", "channels:", "  - conda-forge", "dependencies:", "  - python=3.11", "  - pip",
             "  - pip:", *(f"      - {p}" for p in pins), "      - -e ."]
    (ROOT / "environment.yml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
