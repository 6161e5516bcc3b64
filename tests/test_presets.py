"""Every preset composes what it composed when its values were last reviewed.

``tests/data/composed_presets.json`` holds ``dqn train algo=A env=E --cfg job`` (resolved) for every
(algo, env preset) pair. Restructuring the YAML (where a value lives, comments, defaults lists)
must leave every pair's config as it is, so no run changes; a deliberate change to a preset
rewrites the file, reviewed in the diff:

    .venv/bin/python tests/test_presets.py --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import ROOT

SNAPSHOT = Path(__file__).parent / "data" / "composed_presets.json"
ALGOS = sorted(p.stem for p in (ROOT / "configs" / "algo").glob("*.yaml"))
ENVS = sorted(p.stem for p in (ROOT / "configs" / "env").glob("*.yaml"))


def composed(algo: str, env: str) -> dict:
    """The resolved config of ``dqn train algo=ALGO env=ENV`` (no validation: only composition)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dqn_cli.app.cli import config_dir
    from dqn_cli.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=[f"algo={algo}", f"env={env}"]), resolve=True)


def all_presets() -> dict:
    return {f"algo={a} env={e}": effective(composed(a, e)) for a in ALGOS for e in ENVS}


def effective(cfg: dict) -> dict:
    """``cfg`` without the values no code reads for it: the return range of a distributional head
    (network.v_min, v_max: the env preset's) in a config without one."""
    if cfg["network"]["distributional"] != "c51":
        cfg["network"] = {k: v for k, v in cfg["network"].items() if k not in ("v_min", "v_max")}
    return cfg


def test_every_algo_env_pair_composes_its_reviewed_config():
    expected = {pair: effective(cfg) for pair, cfg in json.loads(SNAPSHOT.read_text()).items()}
    now = all_presets()
    assert sorted(now) == sorted(expected), "presets were added or removed: rerun with --update and review"
    changed = {pair: _diff(expected[pair], now[pair]) for pair in expected if now[pair] != expected[pair]}
    assert not changed, f"composed configs changed (rerun with --update if on purpose): {changed}"


def _diff(a: dict, b: dict, prefix: str = "") -> dict:
    out = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(x, dict) and isinstance(y, dict):
            out.update(_diff(x, y, f"{prefix}{key}."))
        elif x != y:
            out[prefix + key] = (x, y)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        raise SystemExit("usage: python tests/test_presets.py --update")
    SNAPSHOT.write_text(json.dumps(all_presets(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
